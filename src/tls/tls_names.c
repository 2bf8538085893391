/* tls_names: the DNS names a server certificate answers for, to pick it by SNI. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tls/tls_priv.h"

#define TLS_NAME_MAX 255

/* Adds a lower-cased copy of the LEN bytes at S unless it is empty, too long or holds a NUL. */
static int tls_names_add(struct tls_names *names, const unsigned char *s, int len)
{
    if (len <= 0 || len > TLS_NAME_MAX || memchr(s, '\0', (size_t)len))
        return 0;
    char **v = realloc(names->v, (names->n + 1) * sizeof *v);
    if (!v)
        return -1;
    names->v = v;
    char *copy = malloc((size_t)len + 1);
    if (!copy)
        return -1;
    for (int i = 0; i < len; i++)
        copy[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    copy[len] = '\0';
    names->v[names->n++] = copy;
    return 0;
}

static int tls_names_from_san(X509 *cert, struct tls_names *out)
{
    GENERAL_NAMES *san = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int rc = 0;
    for (int i = 0; san && i < sk_GENERAL_NAME_num(san) && rc == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
        if (g->type == GEN_DNS)
            rc = tls_names_add(out, ASN1_STRING_get0_data(g->d.dNSName),
                               ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(san);
    return rc;
}

/* Without DNS subjectAltNames, the subject's last CN. */
static int tls_names_from_cn(X509 *cert, struct tls_names *out)
{
    const X509_NAME *subject = X509_get_subject_name(cert);
    int at = -1, last = -1;
    while ((at = X509_NAME_get_index_by_NID(subject, NID_commonName, at)) >= 0)
        last = at;
    if (last < 0)
        return 0;
    const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, last));
    return tls_names_add(out, ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn));
}

static int tls_names_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts and drops repeats, so that equal sets compare equal element by element. */
static void tls_names_normalise(struct tls_names *names)
{
    size_t k = 0;
    if (names->n > 1)
        qsort(names->v, names->n, sizeof *names->v, tls_names_cmp);
    for (size_t i = 0; i < names->n; i++) {
        if (k && strcmp(names->v[k - 1], names->v[i]) == 0)
            free(names->v[i]);
        else
            names->v[k++] = names->v[i];
    }
    names->n = k;
}

int tls_names_from_file(const char *path, const char *who, struct tls_names *out, char *err,
                        size_t cap)
{
    *out = (struct tls_names){ 0 };
    ERR_clear_error();
    FILE *f = fopen(path, "r");
    X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!cert)
        return tls_load_error(err, cap, who, "certificate", path);
    int rc = tls_names_from_san(cert, out);
    if (rc == 0 && out->n == 0)
        rc = tls_names_from_cn(cert, out);
    X509_free(cert);
    if (rc < 0) {
        tls_names_free(out);
        snprintf(err, cap, "%s: out of memory reading certificate %s", who, path);
        return -1;
    }
    tls_names_normalise(out);
    return 0;
}

bool tls_names_equal(const struct tls_names *a, const struct tls_names *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

void tls_names_free(struct tls_names *names)
{
    for (size_t i = 0; i < names->n; i++)
        free(names->v[i]);
    free(names->v);
    *names = (struct tls_names){ 0 };
}

bool tls_names_match(const struct tls_names *names, const char *name, bool exact)
{
    const char *dot = strchr(name, '.');
    if (!exact && (!dot || dot == name))
        return false; /* a wildcard stands for one whole, non-empty label */
    for (size_t i = 0; i < names->n; i++) {
        const char *n = names->v[i];
        if (exact && n[0] != '*' && strcmp(n, name) == 0)
            return true;
        if (!exact && n[0] == '*' && n[1] == '.' && strcmp(n + 1, dot) == 0)
            return true;
    }
    return false;
}
