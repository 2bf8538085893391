/* portero: command line, signals, start and stop of the worker threads. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "admin/admin.h"
#include "core/fdpass.h"
#include "core/log.h"
#include "core/sock.h"
#include "proxy/control.h"
#include "proxy/runtime.h"
#include "proxy/server_state.h"
#include "proxy/takeover.h"
#include "proxy/worker.h"

#define PORTERO_VERSION "0.1.0"
#define MAIN_BACKLOG 4096

static void main_usage(FILE *out)
{
    fprintf(out,
            "usage: portero -c FILE        run in the foreground with configuration FILE\n"
            "       portero -t -c FILE     check FILE and exit (0 valid, 1 invalid)\n"
            "       portero -c FILE --upgrade-socket PATH   also hand our sockets to a successor\n"
            "       portero -c FILE --takeover PATH         take the sockets of the process at PATH\n"
            "       portero --version      print the version\n"
            "       portero --help         print this help\n"
            "\n"
            "signals: SIGTERM/SIGINT drain in-flight requests (limits.drain_timeout) and exit 0;\n"
            "         SIGHUP re-reads FILE (an invalid file leaves the running configuration as it is)\n");
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

/* Sockets handed over by the process we replace (--takeover), matched to listeners by address. */
struct main_inherited {
    int sock;          /* connection to the old process, -1 without --takeover */
    int *fds;
    char **labels;
    size_t n;
};

static int main_take_inherited(struct main_inherited *in, const char *address)
{
    for (size_t k = 0; k < in->n; k++) {
        if (in->fds[k] >= 0 && strcmp(in->labels[k], address) == 0) {
            int fd = in->fds[k];
            in->fds[k] = -1;
            return fd;
        }
    }
    return -1;
}

/* One SO_REUSEPORT socket per worker and listener, all bound before any thread starts, so a busy
 * port fails the start cleanly; inherited sockets are used first. FDS is workers x listeners. */
static int main_bind_all(const struct config *cfg, int *fds, struct main_inherited *in)
{
    for (unsigned w = 0; w < cfg->workers; w++) {
        for (size_t i = 0; i < cfg->n_listeners; i++) {
            const struct conf_listener *l = &cfg->listeners[i];
            int fd = main_take_inherited(in, l->address);
            if (fd < 0)
                fd = sock_listen((const struct sockaddr *)&l->addr, l->addr_len, MAIN_BACKLOG);
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

static int main_wait_for_stop(struct control *ctl)
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
            control_request_reload(ctl); /* the control thread reloads; we keep waiting */
            continue;
        }
        log_info("%s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return sig;
    }
}

/* Inherited sockets left over (the old process had more workers) still hold queued
 * connections: spread them over the workers rather than drop those connections. */
static void main_adopt_leftovers(struct worker *workers, const struct config *cfg, struct main_inherited *in)
{
    unsigned next = 0;
    for (size_t k = 0; k < in->n; k++) {
        if (in->fds[k] < 0)
            continue;
        bool wanted = false;
        for (size_t i = 0; i < cfg->n_listeners && !wanted; i++)
            wanted = strcmp(cfg->listeners[i].address, in->labels[k]) == 0;
        if (!wanted || worker_adopt_listener(&workers[next++ % cfg->workers], in->fds[k], in->labels[k]) < 0)
            close(in->fds[k]);
        in->fds[k] = -1;
    }
}

/* Prepares then starts every worker; returns how many run (all, or none on a failure). */
static unsigned main_start_workers(struct worker_group *group, struct worker *workers, const struct config *cfg,
                                   int *fds, int access_fd, struct main_inherited *in)
{
    unsigned ready = 0, started = 0;
    for (; ready < cfg->workers; ready++) {
        if (worker_init(&workers[ready], group, ready, &fds[ready * cfg->n_listeners], access_fd, cfg->log.format) < 0)
            break;
        for (size_t i = 0; i < cfg->n_listeners; i++)
            fds[ready * cfg->n_listeners + i] = -1; /* now the worker's */
    }
    if (ready == cfg->workers) {
        main_adopt_leftovers(workers, cfg, in);
        while (started < ready && worker_start(&workers[started]) == 0)
            started++;
    }
    unsigned prepared = ready < cfg->workers ? ready + 1 : ready; /* a failed init is half made */
    for (unsigned i = started; i < prepared; i++)
        worker_destroy(&workers[i]);
    if (started < cfg->workers)
        log_error("cannot start worker %u", started);
    return started;
}

/* The admin API, started by main and kept following admin.address on every publication. */
struct main_admin {
    struct control *ctl;
    struct admin *admin;
};

static void main_admin_start(struct main_admin *ma)
{
    char *err = NULL;
    /* Serving traffic matters more than the admin API: say so loudly and go on. */
    if (!(ma->admin = admin_start(ma->ctl, &err)))
        log_error("admin API not available: %s", err ? err : "cannot start");
    free(err);
}

/* Control thread, after a publication. */
static void main_admin_on_publish(void *arg)
{
    struct main_admin *ma = arg;
    if (ma->admin)
        admin_apply(ma->admin);
    else
        main_admin_start(ma); /* it could not start before: the new address may do */
}

struct main_opts {
    const char *path;
    const char *upgrade_socket; /* --upgrade-socket: where a successor asks for our sockets */
    const char *takeover;       /* --takeover: the predecessor's upgrade socket */
    bool check_only;
};

static void main_stop_all(struct control *ctl, struct main_admin *ma, struct takeover *tk, struct worker *workers,
                          unsigned started)
{
    control_stop(ctl);
    takeover_free(tk); /* its socket lives on the control loop, now stopped */
    if (ma->admin)
        admin_free(ma->admin);
    for (unsigned i = 0; i < started; i++)
        worker_request_stop(&workers[i]);
    for (unsigned i = 0; i < started; i++)
        worker_join(&workers[i]);
    control_free(ctl);
    for (unsigned i = 0; i < started; i++) /* after every join: a worker may wake another */
        worker_destroy(&workers[i]);
}

static int main_serve(struct config *cfg, const struct main_opts *o, struct runtime *rt, int *fds, int access_fd,
                      struct main_inherited *in)
{
    struct worker *workers = calloc(cfg->workers, sizeof *workers);
    struct worker_group group;
    if (!workers || worker_group_init(&group, workers, cfg->workers, rt) < 0) {
        free(workers);
        return 1;
    }
    char *err = NULL;
    struct control *ctl = control_new(cfg->path, &group, rt, &err);
    struct takeover *tk = NULL;
    struct main_admin ma = { .ctl = ctl };
    if (ctl) {
        main_admin_start(&ma);
        control_on_publish(ctl, main_admin_on_publish, &ma);
    }
    unsigned started = ctl ? main_start_workers(&group, workers, cfg, fds, access_fd, in) : 0;
    if (ctl) {
        log_info("portero %s started: %u workers", PORTERO_VERSION, started);
        control_start(ctl);
        if (in->sock >= 0 && started == cfg->workers) {
            takeover_confirm(in->sock); /* serving on the inherited sockets: the old process may go */
            in->sock = -1;
        }
        /* Only now take over the upgrade path: had we failed earlier, the old process would have
         * kept it and stayed upgradable. */
        if (o->upgrade_socket && started == cfg->workers &&
            !(tk = takeover_serve(control_loop(ctl), o->upgrade_socket, &group)))
            log_error("--upgrade-socket %s: %s (binary upgrades disabled)", o->upgrade_socket, strerror(errno));
        if (started == cfg->workers)
            main_wait_for_stop(ctl);
        main_stop_all(ctl, &ma, tk, workers, started);
    } else {
        fprintf(stderr, "%s: %s\n", cfg->path, err ? err : "cannot start the control thread");
    }
    free(err);
    worker_group_destroy(&group);
    free(workers);
    log_info("stopped");
    return ctl && started == cfg->workers ? 0 : 1;
}

static int main_run(struct config *cfg, const struct main_opts *o)
{
    struct main_inherited in = { .sock = -1 };
    if (o->takeover && (in.sock = takeover_receive(o->takeover, &in.fds, &in.labels, &in.n)) < 0) {
        fprintf(stderr, "--takeover %s: %s\n", o->takeover, strerror(errno));
        return 1;
    }
    int status = 1;
    size_t n_fds = (size_t)cfg->workers * cfg->n_listeners;
    int *fds = calloc(n_fds ? n_fds : 1, sizeof *fds);
    for (size_t i = 0; i < n_fds && fds; i++)
        fds[i] = -1;
    int access_fd = main_open_access_log(cfg);
    struct runtime *rt = NULL;
    char err[512];
    if (fds && main_bind_all(cfg, fds, &in) == 0) {
        if ((rt = runtime_build(cfg, 1, NULL, err, sizeof err)))
            status = main_serve(cfg, o, rt, fds, access_fd, &in);
        else
            fprintf(stderr, "%s: %s\n", cfg->path, err);
    }
    runtime_unref(rt);
    for (size_t i = 0; fds && i < n_fds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    for (size_t k = 0; k < in.n; k++)
        if (in.fds[k] >= 0)
            close(in.fds[k]);
    if (in.sock >= 0)
        close(in.sock); /* never confirmed: the old process keeps serving */
    fdpass_free(in.fds, in.labels, in.n);
    if (access_fd > 2)
        close(access_fd);
    free(fds);
    server_state_registry_free();
    return status;
}

static int main_parse(int argc, char **argv, struct main_opts *o)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },         { "test", no_argument, NULL, 't' },
        { "version", no_argument, NULL, 'V' },               { "help", no_argument, NULL, 'h' },
        { "upgrade-socket", required_argument, NULL, 'U' }, { "takeover", required_argument, NULL, 'T' },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:thV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': o->path = optarg; break;
        case 't': o->check_only = true; break;
        case 'U': o->upgrade_socket = optarg; break;
        case 'T': o->takeover = optarg; break;
        case 'V': printf("portero %s\n", PORTERO_VERSION); return 0;
        case 'h': main_usage(stdout); return 0;
        default: main_usage(stderr); return 2;
        }
    }
    if (!o->path || optind != argc) {
        main_usage(stderr);
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct main_opts o = { 0 };
    int early = main_parse(argc, argv, &o);
    if (early >= 0)
        return early;
    struct config *cfg = main_load(o.path);
    if (!cfg)
        return 1;
    if (o.check_only) {
        /* Files the configuration names (users, keys, WAF rules) are part of the check. */
        char err[512];
        struct runtime *rt = runtime_build(cfg, 1, NULL, err, sizeof err);
        if (rt)
            printf("%s: configuration ok\n", o.path);
        else
            fprintf(stderr, "%s: %s\n", o.path, err);
        runtime_unref(rt);
        config_unref(cfg);
        return rt ? 0 : 1;
    }
    if (log_open(cfg->log.error) < 0) {
        fprintf(stderr, "%s: log.error: cannot open %s: %s\n", o.path, cfg->log.error, strerror(errno));
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
    int status = main_run(cfg, &o);
    config_unref(cfg);
    log_close();
    return status;
}
