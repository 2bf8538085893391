/* portero: command line, signals, start and stop of the worker threads. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "core/log.h"
#include "core/sock.h"
#include "proxy/balance.h"
#include "proxy/worker.h"

#define PORTERO_VERSION "0.1.0"
#define MAIN_BACKLOG 4096

static void main_usage(FILE *out)
{
    fprintf(out,
            "usage: portero -c FILE        run in the foreground with configuration FILE\n"
            "       portero -t -c FILE     check FILE and exit (0 valid, 1 invalid)\n"
            "       portero --version      print the version\n"
            "       portero --help         print this help\n"
            "\n"
            "signals: SIGTERM/SIGINT drain in-flight requests (limits.drain_timeout) and exit 0\n");
}

static struct config *main_load(const char *path)
{
    struct conf_errors errs = { 0 };
    struct config *cfg = config_load_file(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    conf_errors_free(&errs);
    return cfg;
}

static int main_open_access_log(const struct config *cfg)
{
    const char *dest = cfg->log.access;
    if (!dest || strcmp(dest, "off") == 0)
        return -1;
    if (strcmp(dest, "stdout") == 0)
        return 1;
    if (strcmp(dest, "stderr") == 0)
        return 2;
    return open(dest, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* One SO_REUSEPORT socket per worker and listener, all bound before any thread starts, so a busy
 * port fails the start cleanly. FDS is workers x listeners. */
static int main_bind_all(const struct config *cfg, int *fds)
{
    for (unsigned w = 0; w < cfg->workers; w++) {
        for (size_t i = 0; i < cfg->n_listeners; i++) {
            const struct conf_listener *l = &cfg->listeners[i];
            int fd = sock_listen((const struct sockaddr *)&l->addr, l->addr_len, MAIN_BACKLOG);
            if (fd < 0) {
                fprintf(stderr, "%s: listener %s: cannot listen on %s: %s\n", cfg->path, l->name, l->address,
                        strerror(errno));
                return -1;
            }
            fds[w * cfg->n_listeners + i] = fd;
            if (w == 0)
                log_info("listening on %s (listener %s)", l->address, l->name);
        }
    }
    return 0;
}

static int main_wait_for_stop(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_warn("SIGHUP: configuration reload is not available in this version; ignoring");
            continue;
        }
        log_info("%s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return sig;
    }
}

static int main_run(struct config *cfg)
{
    int status = 1;
    size_t n_fds = (size_t)cfg->workers * cfg->n_listeners;
    int *fds = calloc(n_fds ? n_fds : 1, sizeof *fds);
    struct worker *workers = calloc(cfg->workers, sizeof *workers);
    struct worker_group group = { .workers = workers, .n_workers = cfg->workers,
                                  .max_connections = cfg->limits.max_connections };
    struct balance_ring **rings = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *rings);
    for (size_t i = 0; i < n_fds && fds; i++)
        fds[i] = -1;
    int access_fd = main_open_access_log(cfg);
    if (!fds || !workers || !rings || main_bind_all(cfg, fds) < 0)
        goto out;
    for (size_t u = 0; u < cfg->n_upstreams; u++)
        if (cfg->upstreams[u].balance == BALANCE_HASH && !(rings[u] = balance_ring_build(&cfg->upstreams[u])))
            goto out;
    unsigned started = 0;
    for (; started < cfg->workers; started++) {
        struct worker *w = &workers[started];
        if (worker_init(w, &group, started, cfg, &fds[started * cfg->n_listeners], rings, access_fd) < 0 ||
            worker_start(w) < 0) {
            log_error("cannot start worker %u", started);
            worker_destroy(w);
            break;
        }
        for (size_t i = 0; i < cfg->n_listeners; i++)
            fds[started * cfg->n_listeners + i] = -1; /* now the worker's */
    }
    log_info("portero %s started: %u workers", PORTERO_VERSION, started);
    if (started == cfg->workers)
        main_wait_for_stop();
    for (unsigned i = 0; i < started; i++)
        worker_request_stop(&workers[i]);
    for (unsigned i = 0; i < started; i++)
        worker_join(&workers[i]);
    for (unsigned i = 0; i < started; i++) /* after every join: a worker may wake another */
        worker_destroy(&workers[i]);
    status = started == cfg->workers ? 0 : 1;
    log_info("stopped");
out:
    for (size_t i = 0; fds && i < n_fds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    for (size_t u = 0; rings && u < cfg->n_upstreams; u++)
        balance_ring_free(rings[u]);
    if (access_fd > 2)
        close(access_fd);
    free(rings);
    free(workers);
    free(fds);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' }, { "test", no_argument, NULL, 't' },
        { "version", no_argument, NULL, 'V' },       { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = NULL;
    int check_only = 0, opt;
    while ((opt = getopt_long(argc, argv, "c:thV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = 1; break;
        case 'V': printf("portero %s\n", PORTERO_VERSION); return 0;
        case 'h': main_usage(stdout); return 0;
        default: main_usage(stderr); return 2;
        }
    }
    if (!path || optind != argc) {
        main_usage(stderr);
        return 2;
    }
    struct config *cfg = main_load(path);
    if (!cfg)
        return 1;
    if (check_only) {
        printf("%s: configuration ok\n", path);
        config_unref(cfg);
        return 0;
    }
    if (log_open(cfg->log.error) < 0) {
        fprintf(stderr, "%s: log.error: cannot open %s: %s\n", path, cfg->log.error, strerror(errno));
        config_unref(cfg);
        return 1;
    }
    log_set_level((enum log_sev)cfg->log.level);
    /* Signals are taken by sigwait in the main thread only; workers inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    int status = main_run(cfg);
    config_unref(cfg);
    log_close();
    return status;
}
