/* Unit tests of the string helpers the parsers and header code lean on. */
#include "core/str.h"
#include "unit.h"

UNIT_TEST(ieq_cstr_compares_case_insensitively_and_whole)
{
    CHECK(str_ieq_cstr(STR_LIT("Content-Length"), "content-length"));
    CHECK(str_ieq_cstr(STR_LIT("HOST"), "host"));
    CHECK(str_ieq_cstr(STR_LIT(""), ""));
    CHECK(!str_ieq_cstr(STR_LIT("Host"), "hos"));      /* B shorter */
    CHECK(!str_ieq_cstr(STR_LIT("Hos"), "host"));      /* A shorter */
    CHECK(!str_ieq_cstr(STR_LIT("Hosu"), "host"));
    CHECK(!str_ieq_cstr(STR_LIT(""), "x"));
    CHECK(!str_ieq_cstr(STR_LIT("x"), ""));
    /* A holds a NUL where B ends: not equal (lengths differ) */
    CHECK(!str_ieq_cstr(str_make("via\0x", 5), "via"));
    /* only ASCII letters fold */
    CHECK(!str_ieq_cstr(STR_LIT("@"), "`"));
    CHECK(!str_ieq_cstr(STR_LIT("["), "{"));
}

UNIT_TEST(ieq_agrees_with_ieq_cstr)
{
    const char *names[] = { "x-forwarded-for", "X-Forwarded-For", "x-forwarded-fo", "via", "VIA", "" };
    for (size_t i = 0; i < 6; i++)
        for (size_t j = 0; j < 6; j++)
            CHECK_EQ_INT(str_ieq_cstr(str_make(names[i], strlen(names[i])), names[j]),
                         str_ieq(str_make(names[i], strlen(names[i])), str_make(names[j], strlen(names[j]))));
}

UNIT_MAIN()
