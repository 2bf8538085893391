/* select: server choice over usable, untried servers; panic; passive ejection bookkeeping. */
#include <stdlib.h>
#include <string.h>

#include "proxy/select.h"
#include "unit.h"

struct fixture {
    struct conf_server servers[3];
    struct conf_upstream up;
    struct server_state *states[3];
    struct worker_upstream wu;
    bool tried[3];
    bool skip[3];
    struct worker w;
};

static void fixture_init(struct fixture *f, const char *name)
{
    memset(f, 0, sizeof *f);
    static const char *addrs[3] = { "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80" };
    for (int i = 0; i < 3; i++) {
        f->servers[i].address = (char *)addrs[i];
        f->servers[i].weight = 1;
        f->servers[i].index = (size_t)i;
        f->states[i] = server_state_get(name, addrs[i]);
    }
    f->up.name = (char *)name;
    f->up.servers = f->servers;
    f->up.n_servers = 3;
    f->up.outlier = (struct conf_outlier){ 3, 1000, 8000, 50 };
    balance_state_init(&f->wu.bal, &f->up, NULL, 42);
    f->wu.skip = f->skip;
}

static void fixture_free(struct fixture *f)
{
    balance_state_free(&f->wu.bal);
    for (int i = 0; i < 3; i++)
        server_state_put(f->states[i]);
}

UNIT_TEST(test_select_skips_tried_and_draining)
{
    struct fixture f;
    fixture_init(&f, "a");
    f.servers[1].drain = true;
    f.tried[0] = true;
    for (int i = 0; i < 10; i++)
        CHECK_EQ_INT(select_server(&f.wu, &f.up, f.states, f.tried, 0, 100), 2);
    f.tried[2] = true;
    CHECK_EQ_INT(select_server(&f.wu, &f.up, f.states, f.tried, 0, 100), SELECT_NONE_LEFT);
    CHECK(!select_has_candidate(&f.up, f.states, f.tried, 100));
    fixture_free(&f);
}

UNIT_TEST(test_select_all_down_is_503_unless_panic)
{
    struct fixture f;
    fixture_init(&f, "b");
    for (int i = 0; i < 3; i++)
        atomic_store(&f.states[i]->active_up, false);
    CHECK_EQ_INT(select_server(&f.wu, &f.up, f.states, f.tried, 0, 100), SELECT_ALL_DOWN);
    CHECK(!select_has_candidate(&f.up, f.states, f.tried, 100));
    f.up.panic = true;
    int s = select_server(&f.wu, &f.up, f.states, f.tried, 0, 100);
    CHECK(s >= 0 && s < 3);
    CHECK(select_has_candidate(&f.up, f.states, f.tried, 100));
    fixture_free(&f);
}

UNIT_TEST(test_select_avoids_down_server)
{
    struct fixture f;
    fixture_init(&f, "c");
    atomic_store(&f.states[0]->active_up, false);
    int seen[3] = { 0 };
    for (int i = 0; i < 30; i++)
        seen[select_server(&f.wu, &f.up, f.states, f.tried, 0, 100)]++;
    CHECK_EQ_INT(seen[0], 0);
    CHECK_EQ_INT(seen[1], 15);
    CHECK_EQ_INT(seen[2], 15);
    fixture_free(&f);
}

UNIT_TEST(test_select_record_ejects_after_consecutive_failures)
{
    struct fixture f;
    fixture_init(&f, "d");
    select_record(&f.w, &f.up, f.states, 1, false, 1000);
    select_record(&f.w, &f.up, f.states, 1, false, 1000);
    CHECK(server_state_usable(f.states[1], 1000));
    select_record(&f.w, &f.up, f.states, 1, false, 1000);
    CHECK(!server_state_usable(f.states[1], 1001));
    CHECK_EQ_INT(STATS_GET(f.w.stats.ejections), 1);
    for (int i = 0; i < 20; i++)
        CHECK(select_server(&f.wu, &f.up, f.states, f.tried, 0, 1001) != 1);
    CHECK(server_state_usable(f.states[1], 1000 + 1000)); /* base ejection time over */
    /* a second server may not go too: 1 of 3 ejected is the 50% share's limit */
    for (int i = 0; i < 3; i++)
        select_record(&f.w, &f.up, f.states, 2, false, 1500);
    CHECK(server_state_usable(f.states[2], 1501));
    fixture_free(&f);
}

UNIT_TEST(test_select_success_resets_failures)
{
    struct fixture f;
    fixture_init(&f, "e");
    select_record(&f.w, &f.up, f.states, 0, false, 10);
    select_record(&f.w, &f.up, f.states, 0, false, 10);
    select_record(&f.w, &f.up, f.states, 0, true, 10);
    select_record(&f.w, &f.up, f.states, 0, false, 10);
    select_record(&f.w, &f.up, f.states, 0, false, 10);
    CHECK(server_state_usable(f.states[0], 11));
    fixture_free(&f);
}

UNIT_MAIN()
