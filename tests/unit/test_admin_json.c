/* The admin API's JSON: string escaping, the writer's commas, and the flat body reader. */
#include <math.h>

#include "admin/admin_json.h"
#include "unit.h"

/* Escapes IN[0..N) and compares with WANT (quotes included). */
static int escaped_is(const char *in, size_t n, const char *want)
{
    struct sbuf b = { 0 };
    admin_json_escape(&b, in, n);
    int ok = b.len == strlen(want) && memcmp(b.p, want, b.len) == 0;
    if (!ok)
        fprintf(stderr, "  escaped: %.*s\n  wanted:  %s\n", (int)b.len, b.p, want);
    sbuf_free(&b);
    return ok;
}
#define ESC(lit, want) escaped_is(lit, sizeof(lit) - 1, want)

UNIT_TEST(json_escape_plain_and_specials)
{
    CHECK(ESC("", "\"\""));
    CHECK(ESC("app", "\"app\""));
    CHECK(ESC("a\"b", "\"a\\\"b\""));
    CHECK(ESC("back\\slash", "\"back\\\\slash\""));
    CHECK(ESC("l1\nl2\r\t", "\"l1\\nl2\\r\\t\""));
    CHECK(ESC("\b\f", "\"\\b\\f\""));
    CHECK(ESC("\x01\x1f", "\"\\u0001\\u001f\""));
    CHECK(ESC("nul\0in", "\"nul\\u0000in\""));
    CHECK(ESC("/ and \x7f stay", "\"/ and \x7f stay\""));
}

UNIT_TEST(json_escape_utf8)
{
    CHECK(ESC("caf\xc3\xa9", "\"caf\xc3\xa9\""));                 /* é kept */
    CHECK(ESC("\xe2\x82\xac", "\"\xe2\x82\xac\""));               /* € kept */
    CHECK(ESC("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""));       /* 4-byte kept */
    CHECK(ESC("a\xff" "b", "\"a\\ufffdb\""));                      /* not UTF-8 */
    CHECK(ESC("\xc0\xaf", "\"\\ufffd\\ufffd\""));                  /* overlong */
    CHECK(ESC("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""));       /* surrogate */
    CHECK(ESC("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"")); /* > U+10FFFF */
    CHECK(ESC("cut\xe2\x82", "\"cut\\ufffd\\ufffd\""));            /* truncated */
}

UNIT_TEST(json_writer_places_commas)
{
    struct sbuf b = { 0 };
    struct admin_json j = { .out = &b };
    admin_json_begin(&j, NULL, '{');
    admin_json_u64(&j, "n", 18446744073709551615ULL);
    admin_json_begin(&j, "list", '[');
    admin_json_bool(&j, NULL, true);
    admin_json_str(&j, NULL, "x\"y");
    admin_json_begin(&j, NULL, '{');
    admin_json_end(&j, '}');
    admin_json_str(&j, NULL, NULL);
    admin_json_end(&j, ']');
    admin_json_num(&j, "rate", 1.5);
    admin_json_num(&j, "nan", NAN);
    admin_json_raw(&j, "raw", "{\"a\":1}", 7);
    admin_json_begin(&j, "empty", '[');
    admin_json_end(&j, ']');
    admin_json_end(&j, '}');
    const char *want = "{\"n\":18446744073709551615,\"list\":[true,\"x\\\"y\",{},null],"
                       "\"rate\":1.50,\"nan\":0.00,\"raw\":{\"a\":1},\"empty\":[]}";
    CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
    if (b.len != strlen(want) || memcmp(b.p, want, b.len) != 0)
        fprintf(stderr, "  got %.*s\n", (int)b.len, b.p);
    sbuf_free(&b);
}

static char parse_err[256];

/* Parses TEXT into B; on failure PARSE_ERR holds the message. */
static int parse(const char *text, struct admin_body *b)
{
    parse_err[0] = '\0';
    return admin_body_parse(text, strlen(text), b, parse_err, sizeof parse_err);
}

UNIT_TEST(body_flat_object)
{
    struct admin_body b;
    CHECK_EQ_INT(parse("{\"address\": \"127.0.0.1:9003\", \"weight\": 2, \"drain\": true}", &b), 0);
    CHECK_EQ_INT(b.n, 3);
    const struct admin_field *f = admin_body_get(&b, "address");
    CHECK(f && f->type == ADMIN_VALUE_STRING && strcmp(f->str, "127.0.0.1:9003") == 0);
    f = admin_body_get(&b, "weight");
    CHECK(f && f->type == ADMIN_VALUE_INT && f->num == 2);
    f = admin_body_get(&b, "drain");
    CHECK(f && f->type == ADMIN_VALUE_BOOL && f->flag);
    CHECK(admin_body_get(&b, "nope") == NULL);
    admin_body_free(&b);
}

UNIT_TEST(body_compact_and_typed_values)
{
    struct admin_body b;
    CHECK_EQ_INT(parse("{\"a\":\"x\",\"n\":-12,\"f\":false,\"q\":\"true\",\"big\":9223372036854775807}", &b), 0);
    CHECK_EQ_INT(b.n, 5);
    CHECK(admin_body_get(&b, "n")->num == -12);
    CHECK(admin_body_get(&b, "f")->type == ADMIN_VALUE_BOOL && !admin_body_get(&b, "f")->flag);
    CHECK(admin_body_get(&b, "q")->type == ADMIN_VALUE_STRING); /* quoted: a string */
    CHECK(admin_body_get(&b, "big")->num == INT64_MAX);
    admin_body_free(&b);
    CHECK_EQ_INT(parse("{\"s\": \"a\\\"b\\n\\u00e9\"}", &b), 0);
    CHECK(strcmp(admin_body_get(&b, "s")->str, "a\"b\n\xc3\xa9") == 0);
    admin_body_free(&b);
}

UNIT_TEST(body_empty_is_empty_object)
{
    struct admin_body b;
    CHECK_EQ_INT(parse("", &b), 0);
    CHECK_EQ_INT(b.n, 0);
    CHECK_EQ_INT(parse("  \n", &b), 0);
    CHECK_EQ_INT(b.n, 0);
    CHECK_EQ_INT(parse("{}", &b), 0);
    CHECK_EQ_INT(b.n, 0);
    admin_body_free(&b);
}

UNIT_TEST(body_rejections)
{
    static const char *const bad[] = {
        "{not json",                         /* syntax */
        "[1, 2]",                            /* not an object */
        "\"text\"",                          /* not an object */
        "{\"a\": {\"b\": 1}}",               /* nested object */
        "{\"a\": [1]}",                      /* nested array */
        "{\"a\": null}",                     /* null */
        "{\"a\": 1.5}",                      /* float */
        "{\"a\": 9223372036854775808}",      /* overflow */
        "{\"a\": 1, \"a\": 2}",              /* duplicate */
        "{\"a\": \"x\\u0000y\"}",            /* NUL inside */
        "{\"a\": 1}\n---\n{\"b\": 2}",       /* two documents */
        "{\"a\": &x 1, \"b\": *x}",          /* alias */
        "{[1]: 2}",                          /* non-scalar key */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct admin_body b;
        int rc = parse(bad[i], &b);
        if (rc != -1 || !parse_err[0])
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(rc == -1 && parse_err[0]);
        CHECK_EQ_INT(b.n, 0);
    }
}

UNIT_TEST(body_too_many_keys)
{
    struct sbuf text = { 0 };
    sbuf_append_cstr(&text, "{");
    for (int i = 0; i <= ADMIN_BODY_MAX_FIELDS; i++) {
        char kv[32];
        snprintf(kv, sizeof kv, "%s\"k%d\": %d", i ? ", " : "", i, i);
        sbuf_append_cstr(&text, kv);
    }
    sbuf_append_cstr(&text, "}");
    struct admin_body b;
    char err[256];
    CHECK_EQ_INT(admin_body_parse(text.p, text.len, &b, err, sizeof err), -1);
    CHECK(strstr(err, "too many") != NULL);
    sbuf_free(&text);
}

UNIT_MAIN()
