#include "proxy/control.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "proxy/health.h"
#include "proxy/runtime.h"
#include "proxy/worker.h"

struct control {
    struct loop *loop;
    pthread_t thread;
    char *path;                    /* the config file, owned */
    struct worker_group *group;    /* borrowed from main */
    struct runtime *rt;            /* current, a reference */
    uint64_t generation;
    struct health *health;
    void (*on_publish)(void *arg);  /* e.g. the admin API following admin.address (main wires it) */
    void *on_publish_arg;
    atomic_bool reload_requested;
    atomic_bool stop_requested;
    bool unsaved;
    bool running;
    uint64_t reloads_ok, reloads_failed;
    uint64_t started_at;
};

/* --- what changed ------------------------------------------------------------------------------ */

static bool control_has_route(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        if (strcmp(cfg->routes[i].name, name) == 0)
            return true;
    return false;
}

static bool control_has_server(const struct config *cfg, const char *up, const char *addr)
{
    const struct conf_upstream *u = config_find_upstream(cfg, up);
    for (size_t s = 0; u && s < u->n_servers; s++)
        if (strcmp(u->servers[s].address, addr) == 0)
            return true;
    return false;
}

static bool control_has_listener(const struct config *cfg, const char *address)
{
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (strcmp(cfg->listeners[i].address, address) == 0)
            return true;
    return false;
}

/* Counts what B has and A lacks, for each kind. */
static void control_count_new(const struct config *a, const struct config *b, size_t counts[4])
{
    memset(counts, 0, 4 * sizeof counts[0]);
    for (size_t i = 0; i < b->n_routes; i++)
        counts[0] += !control_has_route(a, b->routes[i].name);
    for (size_t i = 0; i < b->n_upstreams; i++) {
        counts[1] += !config_find_upstream(a, b->upstreams[i].name);
        for (size_t s = 0; s < b->upstreams[i].n_servers; s++)
            counts[2] += !control_has_server(a, b->upstreams[i].name, b->upstreams[i].servers[s].address);
    }
    for (size_t i = 0; i < b->n_listeners; i++)
        counts[3] += !control_has_listener(a, b->listeners[i].address);
}

static char *control_summary(const struct config *old, const struct config *cur)
{
    size_t added[4], removed[4];
    control_count_new(old, cur, added);
    control_count_new(cur, old, removed);
    char *out = malloc(160);
    if (out)
        snprintf(out, 160, "routes +%zu -%zu, upstreams +%zu -%zu, servers +%zu -%zu, listeners +%zu -%zu",
                 added[0], removed[0], added[1], removed[1], added[2], removed[2], added[3], removed[3]);
    return out;
}

/* --- publication ------------------------------------------------------------------------------- */

static void control_add_error(struct conf_errors *errs, const char *msg)
{
    char **msgs = realloc(errs->msgs, (errs->n + 1) * sizeof *msgs);
    if (!msgs)
        return;
    errs->msgs = msgs;
    errs->msgs[errs->n++] = strdup(msg);
}

/* New listener addresses must be free before we promise them: bind (without listen, so the
 * probe never joins the SO_REUSEPORT group and takes no connection) and let go. */
static bool control_listeners_bindable(struct control *ctl, const struct config *cfg, struct conf_errors *errs)
{
    bool ok = true;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct conf_listener *l = &cfg->listeners[i];
        if (ctl->rt && control_has_listener(ctl->rt->cfg, l->address))
            continue;
        int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (fd < 0 || bind(fd, (const struct sockaddr *)&l->addr, l->addr_len) < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s: listener %s: cannot listen on %s: %s", cfg->path, l->name, l->address,
                     strerror(errno));
            control_add_error(errs, msg);
            ok = false;
        }
        if (fd >= 0)
            close(fd);
    }
    return ok;
}

static void control_publish(struct control *ctl, struct config *cfg, struct control_result *res)
{
    if (!control_listeners_bindable(ctl, cfg, &res->errors)) {
        config_unref(cfg);
        return;
    }
    char err[512];
    struct runtime *rt = runtime_build(cfg, ctl->generation + 1, ctl->rt, err, sizeof err);
    config_unref(cfg); /* the runtime holds it now */
    if (!rt) {
        control_add_error(&res->errors, err);
        return;
    }
    ctl->generation++;
    res->summary = control_summary(ctl->rt->cfg, rt->cfg);
    worker_group_publish(ctl->group, rt);
    runtime_unref(ctl->rt);
    ctl->rt = rt;
    log_set_level((enum log_sev)rt->cfg->log.level);
    health_apply_runtime(ctl->health, rt);
    if (ctl->on_publish)
        ctl->on_publish(ctl->on_publish_arg);
    res->ok = true;
    log_info("configuration generation %llu published: %s", (unsigned long long)rt->generation,
             res->summary ? res->summary : "");
}

static void control_finish(struct control *ctl, struct control_result *res, const char *what)
{
    if (res->ok) {
        ctl->reloads_ok++;
        return;
    }
    ctl->reloads_failed++;
    log_error("%s rejected, running configuration unchanged (%zu errors):", what, res->errors.n);
    for (size_t i = 0; i < res->errors.n; i++)
        log_error("%s", res->errors.msgs[i]);
}

void control_reload_file(struct control *ctl, struct control_result *res)
{
    memset(res, 0, sizeof *res);
    struct config *cfg = config_load_file(ctl->path, &res->errors);
    if (cfg)
        control_publish(ctl, cfg, res);
    if (res->ok)
        ctl->unsaved = false;
    control_finish(ctl, res, "reload of the configuration file");
}

void control_apply_buffer(struct control *ctl, const char *name, const char *data, size_t len,
                          struct control_result *res)
{
    memset(res, 0, sizeof *res);
    struct config *cfg = config_load_buffer(name, data, len, &res->errors);
    if (cfg)
        control_publish(ctl, cfg, res);
    if (res->ok)
        ctl->unsaved = true;
    control_finish(ctl, res, "configuration from the admin API");
}

void control_result_free(struct control_result *res)
{
    conf_errors_free(&res->errors);
    free(res->summary);
    memset(res, 0, sizeof *res);
}

int control_persist(struct control *ctl, char **err)
{
    char *json = config_to_json(ctl->rt->cfg);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", ctl->path);
    int fd = json ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    size_t len = json ? strlen(json) : 0;
    bool ok = fd >= 0 && write(fd, json, len) == (ssize_t)len && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    ok = ok && rename(tmp, ctl->path) == 0; /* all or nothing: never a half-written config */
    free(json);
    if (!ok) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot write %s: %s", ctl->path, strerror(errno));
        *err = strdup(msg);
        unlink(tmp);
        return -1;
    }
    ctl->unsaved = false;
    log_info("running configuration written to %s", ctl->path);
    return 0;
}

/* --- accessors --------------------------------------------------------------------------------- */

struct config *control_config(struct control *ctl) { return ctl->rt->cfg; }
struct server_state *control_server_state(struct control *ctl, size_t u, size_t s) { return ctl->rt->states[u][s]; }
struct loop *control_loop(struct control *ctl) { return ctl->loop; }
bool control_unsaved(struct control *ctl) { return ctl->unsaved; }
size_t control_worker_count(struct control *ctl) { return ctl->group->n_workers; }
struct worker_stats *control_worker_stats(struct control *ctl, size_t i) { return &ctl->group->workers[i].stats; }
uint64_t control_reloads(struct control *ctl, bool ok) { return ok ? ctl->reloads_ok : ctl->reloads_failed; }
bool control_ready(struct control *ctl) { return ctl->running && !atomic_load(&ctl->stop_requested); }
uint64_t control_started_at(struct control *ctl) { return ctl->started_at; }

void control_on_publish(struct control *ctl, void (*fn)(void *arg), void *arg)
{
    ctl->on_publish = fn;
    ctl->on_publish_arg = arg;
}

void control_request_reload(struct control *ctl)
{
    atomic_store(&ctl->reload_requested, true);
    loop_wake(ctl->loop);
}

/* --- thread -------------------------------------------------------------------------------------- */

static void control_on_wake(void *arg)
{
    struct control *ctl = arg;
    if (atomic_load(&ctl->stop_requested)) {
        loop_stop(ctl->loop);
        return;
    }
    if (atomic_exchange(&ctl->reload_requested, false)) {
        struct control_result res;
        log_info("SIGHUP: reloading %s", ctl->path);
        control_reload_file(ctl, &res);
        control_result_free(&res);
    }
}

static void *control_main(void *arg)
{
    struct control *ctl = arg;
    loop_run(ctl->loop, control_on_wake, ctl);
    return NULL;
}

struct control *control_new(const char *path, struct worker_group *group, struct runtime *rt, char **err)
{
    struct control *ctl = calloc(1, sizeof *ctl);
    if (!ctl || !(ctl->loop = loop_new()) || !(ctl->path = strdup(path)) || !(ctl->health = health_new(ctl->loop))) {
        *err = strdup("out of memory");
        control_free(ctl);
        return NULL;
    }
    ctl->group = group;
    ctl->rt = runtime_ref(rt);
    ctl->generation = rt->generation;
    ctl->started_at = (uint64_t)time(NULL);
    health_apply_runtime(ctl->health, rt);
    return ctl;
}

int control_start(struct control *ctl)
{
    ctl->running = true;
    return pthread_create(&ctl->thread, NULL, control_main, ctl) == 0 ? 0 : -1;
}

void control_stop(struct control *ctl)
{
    atomic_store(&ctl->stop_requested, true);
    loop_wake(ctl->loop);
    pthread_join(ctl->thread, NULL);
    ctl->running = false;
}

void control_free(struct control *ctl)
{
    if (!ctl)
        return;
    if (ctl->health)
        health_free(ctl->health);
    if (ctl->loop)
        loop_flush_tasks(ctl->loop);
    runtime_unref(ctl->rt);
    loop_free(ctl->loop);
    free(ctl->path);
    free(ctl);
}
