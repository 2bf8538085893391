/* Unit tests of the cluster-wide rate-limit client against a real redis-server this file starts
 * on a free port (and kills by PID at exit); skipped only when /usr/bin/redis-server is missing.
 *
 * A loop runs once per test (loop_stop is final), so each test is a script of steps: a step
 * issues requests and may wait (for the callbacks it asked for, or for a while); the next step
 * starts when the waits are over. Results are recorded and checked once the loop returned.
 * Every run is bounded by a safety timer. */
#include "unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"
#include "policy/redis_limit.h"

#ifndef REDIS_BIN
#define REDIS_BIN "/usr/bin/redis-server"
#endif

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* --- the redis-server ---------------------------------------------------------------------- */

static pid_t redis_pid;
static int redis_port;
static bool redis_failed;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sin;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sin.sin_port);
}

static void redis_stop(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
}

static redisContext *redis_sync(void)
{
    struct timeval tv = { 1, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static bool redis_ping(void)
{
    redisContext *c = redis_sync();
    redisReply *rep = c ? redisCommand(c, "PING") : NULL;
    bool ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (rep)
        freeReplyObject(rep);
    if (c)
        redisFree(c);
    return ok;
}

static void redis_exec(int port)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a test that crashed */
    int null = open("/dev/null", O_RDWR);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    execl(REDIS_BIN, "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
          "--appendonly", "no", "--daemonize", "no", "--dir", "/tmp", (char *)NULL);
    _exit(127);
}

/* Starts the server once for the whole file; false when it cannot run here. */
static bool redis_start(void)
{
    if (redis_pid > 0 || redis_failed)
        return redis_pid > 0;
    redis_failed = true;
    signal(SIGPIPE, SIG_IGN); /* as portero's main does: a write to a dead peer is EPIPE */
    if (access(REDIS_BIN, X_OK) != 0 || (redis_port = free_port()) < 0)
        return false;
    pid_t pid = fork();
    if (pid == 0)
        redis_exec(redis_port);
    if (pid < 0)
        return false;
    redis_pid = pid;
    atexit(redis_stop);
    for (int i = 0; i < 500 && !redis_ping(); i++)
        sleep_ms(10);
    redis_failed = !redis_ping();
    return !redis_failed;
}

/* True (and the test goes on) when Redis runs; a missing binary skips, anything else fails. */
static bool need_redis(int *unit_failed, const char *test)
{
    if (redis_start())
        return true;
    if (access(REDIS_BIN, X_OK) != 0) {
        fprintf(stderr, "  SKIP %s: %s is missing (apt-get install redis-server)\n", test, REDIS_BIN);
        return false;
    }
    fprintf(stderr, "  %s: could not start %s\n", test, REDIS_BIN);
    *unit_failed = 1;
    return false;
}

/* A blocking command on a separate connection; the reply (or NULL) is the caller's to free. */
static redisReply *redis_cmd_argv(int argc, const char **argv, const size_t *len)
{
    redisContext *c = redis_sync();
    redisReply *rep = c ? redisCommandArgv(c, argc, argv, len) : NULL;
    if (c)
        redisFree(c);
    return rep;
}

static long long redis_int(const char *cmd, const char *key, size_t key_len)
{
    const char *argv[2] = { cmd, key };
    size_t len[2] = { strlen(cmd), key_len };
    redisReply *rep = redis_cmd_argv(2, argv, len);
    long long v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -999;
    if (rep)
        freeReplyObject(rep);
    return v;
}

static void redis_simple(const char *a, const char *b)
{
    const char *argv[2] = { a, b };
    size_t len[2] = { strlen(a), strlen(b) };
    redisReply *rep = redis_cmd_argv(2, argv, len);
    if (rep)
        freeReplyObject(rep);
}

/* --- configs --------------------------------------------------------------------------------- */

static void cfg_at(struct conf_redis *cfg, int port, uint64_t timeout_ms)
{
    static char address[] = "127.0.0.1:port";
    static char prefix[] = "ptest:";
    struct sockaddr_in *sin = (struct sockaddr_in *)&cfg->addr;
    memset(cfg, 0, sizeof *cfg);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cfg->addr_len = sizeof *sin;
    cfg->address = address;
    cfg->timeout_ms = timeout_ms;
    cfg->prefix = prefix;
}

static struct conf_rate_limit limit_of(char *name, uint32_t rate, uint64_t per_ms, uint32_t burst)
{
    return (struct conf_rate_limit){ .name = name, .rate = rate, .per_ms = per_ms, .burst = burst,
                                     .cluster = true };
}

/* A port where nothing listens. */
static int closed_port(void) { return free_port(); }

/* A listener that never accepts: connects succeed (backlog), nothing ever answers. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sin;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

/* --- the step runner ------------------------------------------------------------------------- */

struct res {
    int calls;
    int64_t value;
    uint64_t issued;    /* real ms */
    uint64_t elapsed;   /* real ms from the request to its callback */
    bool sync;          /* called from inside redis_limit_take (must never be) */
    bool awaited;
};

typedef void (*step_fn)(void);

static struct loop *cur;
static const step_fn *script;
static size_t script_i;
static int awaited;
static bool in_take, timed_out;
static struct loop_task step_task;
static struct loop_timer sleep_timer, safety_timer;
static struct loop_timer probe, mover, killer; /* a test's own timers (stopped at teardown) */

static void step_wake(void)
{
    if (--awaited == 0)
        loop_defer(cur, &step_task);
}

static void on_res(void *arg, int64_t value)
{
    struct res *r = arg;
    r->calls++;
    r->value = value;
    r->elapsed = now_ms() - r->issued;
    r->sync |= in_take;
    if (r->awaited) {
        r->awaited = false;
        step_wake();
    }
}

static void step_run(struct loop_task *t)
{
    (void)t;
    while (awaited == 0) {
        if (!script[script_i]) {
            loop_stop(cur);
            return;
        }
        script[script_i++]();
    }
}

static void sleep_fire(struct loop_timer *t)
{
    (void)t;
    step_wake();
}

static void safety_fire(struct loop_timer *t)
{
    (void)t;
    timed_out = true;
    loop_stop(cur);
}

/* The current step waits MS before the next one starts. */
static void pause_for(uint64_t ms)
{
    awaited++;
    loop_timer_after(cur, &sleep_timer, ms);
}

static struct redis_limit_op *ask(struct redis_limit *rl, const struct conf_redis *c,
                                  const struct conf_rate_limit *l, const char *key,
                                  size_t key_len, struct res *r, bool await)
{
    memset(r, 0, sizeof *r);
    r->issued = now_ms();
    if (await) {
        r->awaited = true;
        awaited++;
    }
    in_take = true;
    struct redis_limit_op *op = redis_limit_take(rl, c, l, key, key_len, on_res, r);
    in_take = false;
    return op;
}

static void run_script(const step_fn *s, uint64_t max_ms)
{
    script = s;
    script_i = 0;
    awaited = 0;
    timed_out = false;
    step_task.run = step_run;
    sleep_timer.on_fire = sleep_fire;
    safety_timer.on_fire = safety_fire;
    loop_defer(cur, &step_task);
    loop_timer_after(cur, &safety_timer, max_ms);
    loop_run(cur, NULL, NULL);
    loop_timer_stop(cur, &safety_timer);
    loop_timer_stop(cur, &sleep_timer);
}

/* Per-test state the steps share. */
static struct redis_limit *rl1, *rl2;
static struct conf_redis cfg, cfg2;
static struct conf_rate_limit lim, lim2, lim3;
#define N_RES 64
static struct res res[N_RES];
static uint64_t marks[8];

static void setup(void)
{
    cur = loop_new();
    rl1 = redis_limit_new(cur);
    rl2 = redis_limit_new(cur);
    memset(res, 0, sizeof res);
    memset(marks, 0, sizeof marks);
}

static void teardown(void)
{
    loop_timer_stop(cur, &probe);
    loop_timer_stop(cur, &mover);
    loop_timer_stop(cur, &killer);
    redis_limit_free(rl1);
    redis_limit_free(rl2);
    rl1 = rl2 = NULL;
    loop_flush_tasks(cur);
    loop_free(cur);
    cur = NULL;
}

static void take_n(struct redis_limit *rl, const struct conf_rate_limit *l, const char *key,
                   int from, int n)
{
    for (int i = from; i < from + n; i++)
        ask(rl, &cfg, l, key, strlen(key), &res[i], true);
}

static void check_called_once(int *unit_failed, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        CHECK_EQ_INT(res[i].calls, 1);
        CHECK(!res[i].sync);
    }
}

/* --- burst, denial, refill ------------------------------------------------------------------- */

static void burst_take4(void) { take_n(rl1, &lim, "10.0.0.1", 0, 4); }
static void burst_wait(void) { pause_for(150); }
static void burst_take2(void) { take_n(rl1, &lim, "10.0.0.1", 4, 2); }

UNIT_TEST(test_redis_burst_denial_refill)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 1000);
    lim = limit_of("burst", 10, 1000, 3);
    static const step_fn steps[] = { burst_take4, burst_wait, burst_take2, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 6);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(res[i].value, 0);
    CHECK(res[3].value > 0 && res[3].value <= 100); /* a token every 100 ms */
    CHECK_EQ_INT(res[4].value, 0);                   /* 150 ms later: refilled */
    CHECK(res[5].value > 0 && res[5].value <= 100);
    /* the bucket lives at prefix + name + ":" + key, and expires once it would be full */
    const char key[] = "ptest:burst:10.0.0.1";
    CHECK_EQ_INT(redis_int("EXISTS", key, strlen(key)), 1);
    long long pttl = redis_int("PTTL", key, strlen(key));
    CHECK(pttl > 1000 && pttl <= 1300);
    teardown();
}

/* --- two instances, one limit ----------------------------------------------------------------- */

static void share_take(void)
{
    for (int i = 0; i < 10; i++)
        ask(i % 2 ? rl2 : rl1, &cfg, i % 2 ? &lim2 : &lim, "shared", 6, &res[i], true);
}

UNIT_TEST(test_redis_two_instances_share_limit)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 1000);
    lim = limit_of("share", 1, 3600000, 5);
    lim2 = limit_of("share", 1, 3600000, 5); /* the other instance's own copy of the config */
    static const step_fn steps[] = { share_take, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 10);
    int allowed = 0, denied = 0;
    for (int i = 0; i < 10; i++) {
        allowed += res[i].value == 0;
        denied += res[i].value > 3500000 && res[i].value <= 3600000;
    }
    CHECK_EQ_INT(allowed, 5);
    CHECK_EQ_INT(denied, 5);
    teardown();
}

/* --- keys and limits ----------------------------------------------------------------------- */

static const char bin_key[] = { 'a', 0, 'b' };

static void indep_take(void)
{
    take_n(rl1, &lim, "A", 0, 2);
    take_n(rl1, &lim, "B", 2, 1);
    take_n(rl1, &lim2, "A", 3, 1);
    ask(rl1, &cfg, &lim, bin_key, sizeof bin_key, &res[4], true);
    ask(rl1, &cfg, &lim, bin_key, sizeof bin_key, &res[5], true);
    ask(rl1, &cfg, &lim, "a", 1, &res[6], true);
    take_n(rl1, &lim3, "huge", 7, 2);
}

UNIT_TEST(test_redis_keys_and_limits_independent)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 1000);
    lim = limit_of("indep", 1, 60000, 1);
    lim2 = limit_of("indep2", 1, 60000, 1);
    /* the largest values the config accepts */
    lim3 = limit_of("huge", 1000000000, 365ULL * 86400 * 1000, 1000000000);
    static const step_fn steps[] = { indep_take, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 9);
    CHECK_EQ_INT(res[7].value, 0);
    CHECK_EQ_INT(res[8].value, 0);
    const char huge[] = "ptest:huge:huge";
    CHECK(redis_int("PTTL", huge, sizeof huge - 1) > 0);
    CHECK_EQ_INT(res[0].value, 0);
    CHECK(res[1].value > 59000);  /* A is spent */
    CHECK_EQ_INT(res[2].value, 0); /* B is not */
    CHECK_EQ_INT(res[3].value, 0); /* nor A under another limit */
    CHECK_EQ_INT(res[4].value, 0); /* a key with a NUL byte */
    CHECK(res[5].value > 0);
    CHECK_EQ_INT(res[6].value, 0); /* its prefix is another key */
    const char full[] = "ptest:indep:a\0b";
    CHECK_EQ_INT(redis_int("EXISTS", full, sizeof full - 1), 1);
    teardown();
}

/* --- NOSCRIPT: the script is sent again when Redis forgot it ----------------------------------- */

static void noscript_flush(void)
{
    redis_simple("SCRIPT", "FLUSH");
    redis_simple("CONFIG", "RESETSTAT");
    take_n(rl1, &lim, "k", 0, 1);
}
static void noscript_second(void) { take_n(rl1, &lim, "k", 1, 1); }
static void noscript_flush_again(void)
{
    redis_simple("SCRIPT", "FLUSH");
    take_n(rl1, &lim, "k", 2, 1);
}

static long long commandstat_calls(const char *info, const char *cmd)
{
    char needle[64];
    snprintf(needle, sizeof needle, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(info, needle);
    return p ? atoll(p + strlen(needle)) : 0;
}

UNIT_TEST(test_redis_noscript_falls_back_to_eval)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 1000);
    lim = limit_of("noscript", 1, 60000, 2);
    static const step_fn steps[] = { noscript_flush, noscript_second, noscript_flush_again, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 3);
    CHECK_EQ_INT(res[0].value, 0);
    CHECK_EQ_INT(res[1].value, 0);
    CHECK(res[2].value > 0); /* the state survived the flush: only the script was lost */
    const char *argv[2] = { "INFO", "commandstats" };
    size_t len[2] = { 4, 12 };
    redisReply *rep = redis_cmd_argv(2, argv, len);
    CHECK(rep && rep->type == REDIS_REPLY_STRING);
    if (rep && rep->type == REDIS_REPLY_STRING) {
        CHECK_EQ_INT(commandstat_calls(rep->str, "eval"), 2);    /* after each flush */
        CHECK_EQ_INT(commandstat_calls(rep->str, "evalsha"), 3); /* every request tries it */
    }
    if (rep)
        freeReplyObject(rep);
    teardown();
}

/* --- many requests in flight on one connection ------------------------------------------------ */

#define N_MANY 3000
static struct res many[N_MANY];

static void many_take(void)
{
    /* long keys: the requests pass the socket buffer, the replies hiredis's 16 KiB reads */
    char key[4000];
    memset(key, 'x', sizeof key);
    for (int i = 0; i < N_MANY; i++)
        ask(rl1, &cfg, &lim, key, sizeof key, &many[i], true);
}

UNIT_TEST(test_redis_many_pipelined)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 10000);
    lim = limit_of("many", 1, 3600000, 1000);
    static const step_fn steps[] = { many_take, NULL };
    run_script(steps, 20000);
    CHECK(!timed_out);
    int allowed = 0, bad = 0;
    for (int i = 0; i < N_MANY; i++) {
        allowed += many[i].calls == 1 && many[i].value == 0;
        bad += many[i].calls != 1 || many[i].value < 0 || many[i].sync;
    }
    CHECK_EQ_INT(allowed, 1000);
    CHECK_EQ_INT(bad, 0);
    teardown();
}

/* --- failures: unreachable, backoff, timeout, stall -------------------------------------------- */

static int lfd = -1;

static int accept_all(int fd)
{
    int n = 0, c;
    while ((c = accept(fd, NULL, NULL)) >= 0) {
        close(c);
        n++;
    }
    return n;
}

static void unreach_first(void) { take_n(rl1, &lim, "k", 0, 1); }
static void unreach_listen(void)
{
    /* now something listens there: the backoff must keep us from trying yet */
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = ((struct sockaddr_in *)&cfg.addr)->sin_port,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 16) < 0) {
        close(lfd);
        lfd = -1;
    }
    take_n(rl1, &lim, "k", 1, 1);
}
static void unreach_backoff_over(void)
{
    marks[0] = lfd >= 0 ? (uint64_t)accept_all(lfd) : 99;
    pause_for(REDIS_LIMIT_BACKOFF_MS + 100);
}
static void unreach_retry(void) { take_n(rl1, &lim, "k", 2, 1); }

UNIT_TEST(test_redis_unreachable_fails_fast_then_backs_off) /* needs no Redis */
{
    setup();
    cfg_at(&cfg, closed_port(), 200);
    lim = limit_of("unreach", 10, 1000, 10);
    static const step_fn steps[] = { unreach_first, unreach_listen, unreach_backoff_over,
                                     unreach_retry, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 3);
    CHECK(res[0].value < 0);
    CHECK(res[0].elapsed < 100); /* refused: no need to wait for the timeout */
    CHECK(res[1].value < 0);
    CHECK(res[1].elapsed < 50);  /* backing off: failed without trying */
    CHECK(lfd >= 0);
    CHECK_EQ_INT(marks[0], 0);   /* ... indeed no connection attempt */
    CHECK(res[2].value < 0);     /* tried again: connected, but nothing answers */
    CHECK(res[2].elapsed >= 190 && res[2].elapsed < 1000);
    if (lfd >= 0) {
        CHECK_EQ_INT(accept_all(lfd), 1);
        close(lfd);
    }
    lfd = -1;
    teardown();
}

static void probe_fire(struct loop_timer *t)
{
    (void)t;
    marks[2] = now_ms() - marks[1];
}

static void timeout_take(void)
{
    uint64_t t0 = now_ms();
    take_n(rl1, &lim, "k", 0, 1);
    marks[0] = now_ms() - t0; /* the call itself */
    marks[1] = t0;
    probe.on_fire = probe_fire; /* a timer of the same loop is not held up meanwhile */
    loop_timer_after(cur, &probe, 10);
}

UNIT_TEST(test_redis_timeout_does_not_block) /* needs no Redis */
{
    setup();
    int port;
    lfd = silent_listener(&port);
    CHECK(lfd >= 0);
    cfg_at(&cfg, port, 80);
    lim = limit_of("timeout", 10, 1000, 10);
    static const step_fn steps[] = { timeout_take, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 1);
    CHECK(res[0].value < 0);
    CHECK(res[0].elapsed >= 78 && res[0].elapsed < 300);
    CHECK(marks[0] < 20);
    CHECK(marks[2] >= 9 && marks[2] < 60);
    close(lfd);
    lfd = -1;
    teardown();
}

/* Requests keep timing out on a connection that answers nothing: after REDIS_LIMIT_STALL_MS it
 * is dropped, and the next request fails at once (backoff) instead of waiting again. */
static void stall_t0(void) { take_n(rl1, &lim, "k", 0, 1); }
static void stall_p1(void) { pause_for(400); }
static void stall_t1(void) { take_n(rl1, &lim, "k", 1, 1); }
static void stall_p2(void) { pause_for(100); }
static void stall_t2(void) { take_n(rl1, &lim, "k", 2, 1); }
static void stall_t3(void) { take_n(rl1, &lim, "k", 3, 1); }

UNIT_TEST(test_redis_stalled_connection_dropped) /* needs no Redis */
{
    setup();
    int port;
    lfd = silent_listener(&port);
    CHECK(lfd >= 0);
    cfg_at(&cfg, port, 200);
    lim = limit_of("stall", 10, 1000, 10);
    static const step_fn steps[] = { stall_t0, stall_p1, stall_t1, stall_p2, stall_t2, stall_t3,
                                     NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 4);
    for (int i = 0; i < 3; i++) {
        CHECK(res[i].value < 0);
        CHECK(res[i].elapsed >= 190);
    }
    CHECK(res[3].value < 0);
    CHECK(res[3].elapsed < 50);
    CHECK_EQ_INT(accept_all(lfd), 1); /* one connection carried the three */
    close(lfd);
    lfd = -1;
    teardown();
}

/* --- cancel and free --------------------------------------------------------------------------- */

static void cancel_step(void)
{
    take_n(rl1, &lim, "k", 0, 1);
    redis_limit_cancel(ask(rl1, &cfg, &lim, "k", 1, &res[1], false));
    take_n(rl1, &lim, "k", 2, 1);
    /* a request failing fast (no address) is cancelled before the loop answers it */
    redis_limit_cancel(ask(rl2, &cfg2, &lim, "k", 1, &res[3], false));
    redis_limit_cancel(NULL);
    pause_for(100); /* room for a wrong callback to come */
}

UNIT_TEST(test_redis_cancel)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 1000);
    cfg_at(&cfg2, redis_port, 1000);
    cfg2.addr_len = 0; /* an address that did not parse */
    lim = limit_of("cancel", 1, 60000, 10);
    static const step_fn steps[] = { cancel_step, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    CHECK_EQ_INT(res[0].calls, 1);
    CHECK_EQ_INT(res[1].calls, 0);
    CHECK_EQ_INT(res[2].calls, 1);
    CHECK_EQ_INT(res[3].calls, 0);
    CHECK_EQ_INT(res[0].value, 0);
    CHECK_EQ_INT(res[2].value, 0);
    teardown();
}

static void free_warm(void) { take_n(rl1, &lim, "k", 0, 1); } /* connected from now on */
static void free_step(void)
{
    ask(rl1, &cfg, &lim, "k", 1, &res[1], false);
    ask(rl1, &cfg, &lim, "k", 1, &res[2], false);
    ask(rl2, &cfg, &lim, "k", 1, &res[3], false); /* still connecting */
    redis_limit_free(rl1);
    redis_limit_free(rl2);
    rl1 = rl2 = NULL;
    pause_for(100);
}

UNIT_TEST(test_redis_free_cancels_pending)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 1000);
    lim = limit_of("free", 1, 60000, 10);
    static const step_fn steps[] = { free_warm, free_step, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    CHECK_EQ_INT(res[0].calls, 1);
    CHECK_EQ_INT(res[1].calls, 0);
    CHECK_EQ_INT(res[2].calls, 0);
    CHECK_EQ_INT(res[3].calls, 0);
    teardown(); /* ASan: nothing leaked */
}

/* --- a reload moves Redis ------------------------------------------------------------------------ */

/* While a request waits on the old address, the next one brings the new address: the old
 * connection is dropped (failing the waiting request from the loop, not inside the take). */
static void mover_fire(struct loop_timer *t)
{
    (void)t;
    cfg = cfg2;
    take_n(rl1, &lim, "k", 1, 1);
}
static void move_silent(void)
{
    take_n(rl1, &lim, "k", 0, 1);
    mover.on_fire = mover_fire;
    loop_timer_after(cur, &mover, 50);
}
static void move_again(void) { take_n(rl1, &lim, "k", 2, 1); }

UNIT_TEST(test_redis_address_change_reconnects)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    int port;
    lfd = silent_listener(&port);
    CHECK(lfd >= 0);
    cfg_at(&cfg, port, 1000);
    cfg_at(&cfg2, redis_port, 1000);
    lim = limit_of("move", 1, 60000, 10);
    static const step_fn steps[] = { move_silent, move_again, NULL };
    run_script(steps, 5000);
    CHECK(!timed_out);
    check_called_once(unit_failed, 0, 3);
    CHECK(res[0].value < 0);
    CHECK(res[0].elapsed >= 45 && res[0].elapsed < 500); /* at the move, not the deadline */
    CHECK_EQ_INT(res[1].value, 0); /* no backoff: a new address is tried at once */
    CHECK_EQ_INT(res[2].value, 0);
    /* the connection to the old address was closed */
    int c = accept(lfd, NULL, NULL);
    CHECK(c >= 0);
    if (c >= 0) {
        char buf[4096];
        ssize_t n;
        int tries = 0;
        while ((n = read(c, buf, sizeof buf)) > 0 && tries++ < 100) {
        } /* our request, then the end */
        CHECK(n == 0 || (n < 0 && errno == ECONNRESET));
        close(c);
    }
    close(lfd);
    lfd = -1;
    teardown();
}

/* Redis restarts under a live connection: the loss fails what was in flight (or nothing), and
 * later requests work again on a new connection. Uses a second, private server. */
static pid_t own_pid;
static int own_port;

static void own_start(void)
{
    if (!own_port)
        own_port = free_port(); /* a restart comes back on the same port */
    own_pid = fork();
    if (own_pid == 0)
        redis_exec(own_port);
}

static bool own_ready(void)
{
    int saved = redis_port;
    redis_port = own_port;
    bool ok = false;
    for (int i = 0; i < 500 && !(ok = redis_ping()); i++)
        sleep_ms(10);
    redis_port = saved;
    return ok;
}

static void own_stop(void)
{
    if (own_pid > 0) {
        kill(own_pid, SIGKILL);
        waitpid(own_pid, NULL, 0);
    }
    own_pid = 0;
}

static void restart_first(void) { take_n(rl1, &lim, "k", 0, 1); }
static void restart_kill(void)
{
    own_stop();
    pause_for(50); /* the end of stream reaches the loop: an idle loss, no backoff */
}
static void restart_again(void)
{
    own_start();
    marks[0] = own_ready();
    take_n(rl1, &lim, "k", 1, 1);
}

/* Redis dies while a request waits for its reply: that request fails at once (not at its
 * deadline), and the next one fails without trying (backoff). */
static void killer_fire(struct loop_timer *t)
{
    (void)t;
    own_stop();
}
static void restart_die_in_flight(void)
{
    kill(own_pid, SIGSTOP);
    take_n(rl1, &lim, "k", 2, 1);
    killer.on_fire = killer_fire;
    loop_timer_after(cur, &killer, 50);
}
static void restart_after_death(void) { take_n(rl1, &lim, "k", 3, 1); }

UNIT_TEST(test_redis_server_restart)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    own_start();
    CHECK(own_pid > 0 && own_ready());
    cfg_at(&cfg, own_port, 1000);
    lim = limit_of("restart", 1, 60000, 10);
    static const step_fn steps[] = { restart_first, restart_kill, restart_again,
                                     restart_die_in_flight, restart_after_death, NULL };
    run_script(steps, 10000);
    CHECK(!timed_out);
    CHECK_EQ_INT(marks[0], 1);
    check_called_once(unit_failed, 0, 4);
    CHECK_EQ_INT(res[0].value, 0);
    CHECK_EQ_INT(res[1].value, 0); /* a fresh server: a full bucket again, no backoff */
    CHECK(res[2].value < 0);
    CHECK(res[2].elapsed >= 45 && res[2].elapsed < 500); /* at the loss, not the 1 s deadline */
    CHECK(res[3].value < 0);
    CHECK(res[3].elapsed < 50);
    own_stop();
    teardown();
}

UNIT_TEST(test_redis_no_callback_without_loop)
{
    if (!need_redis(unit_failed, __func__))
        return;
    setup();
    cfg_at(&cfg, redis_port, 1000);
    lim = limit_of("noloop", 1, 60000, 10);
    struct res r;
    memset(&r, 0, sizeof r);
    in_take = true;
    struct redis_limit_op *op = redis_limit_take(rl1, &cfg, &lim, "k", 1, on_res, &r);
    in_take = false;
    CHECK(op != NULL);
    CHECK_EQ_INT(r.calls, 0); /* nothing happens until the loop runs */
    teardown();
    CHECK_EQ_INT(r.calls, 0);
}

UNIT_MAIN()
