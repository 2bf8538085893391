#include "http/msg.h"

const struct http_header *http_msg_find(const struct http_msg *msg, const char *name)
{
    for (uint32_t i = 0; i < msg->n_headers; i++)
        if (str_ieq_cstr(msg->headers[i].name, name))
            return &msg->headers[i];
    return NULL;
}

/* RFC 9110 §9.2.2 */
bool http_method_is_safe(enum http_method m)
{
    return m == HTTP_METHOD_GET || m == HTTP_METHOD_HEAD || m == HTTP_METHOD_OPTIONS || m == HTTP_METHOD_TRACE;
}

bool http_method_is_idempotent(enum http_method m)
{
    switch (m) {
    case HTTP_METHOD_GET: case HTTP_METHOD_HEAD: case HTTP_METHOD_PUT: case HTTP_METHOD_DELETE:
    case HTTP_METHOD_OPTIONS: case HTTP_METHOD_TRACE:
        return true;
    default:
        return false;
    }
}
