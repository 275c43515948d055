/*
 * dashboard.c - serves the embedded dashboard files (see dashboard.h).
 */
#include "dashboard.h"

#include <string.h>

#define PREFIX "/dashboard/"
#define PREFIX_LEN (sizeof PREFIX - 1)

/* The page talks only to its own origin; styles may be inline because the chart library sets
 * element styles. */
#define PAGE_HEADERS                                                                               \
    "Cache-Control: no-cache\r\n"                                                                  \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline'; "              \
    "img-src 'self' data:; frame-ancestors 'none'\r\n"

bool sp_dashboard_path(const char *path, size_t len)
{
    return (len == 1 && path[0] == '/') ||
           (len > PREFIX_LEN && memcmp(path, PREFIX, PREFIX_LEN) == 0);
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static const char *content_type(const char *name)
{
    size_t n = strlen(name);
    if (ends_with(name, n, ".html")) return "text/html; charset=utf-8";
    if (ends_with(name, n, ".js")) return "text/javascript; charset=utf-8";
    if (ends_with(name, n, ".css")) return "text/css; charset=utf-8";
    if (ends_with(name, n, ".svg")) return "image/svg+xml";
    return "text/plain; charset=utf-8";
}

static const sp_dashboard_asset_t *find(const char *name, size_t len)
{
    for (size_t i = 0; i < sp_dashboard_asset_count; i++) {
        const sp_dashboard_asset_t *a = &sp_dashboard_assets[i];
        if (strlen(a->name) == len && memcmp(a->name, name, len) == 0) return a;
    }
    return NULL;
}

void sp_dashboard_serve(sp_http_req_t *req)
{
    const sp_dashboard_asset_t *a = NULL;
    if (req->path_len == 1 && req->path[0] == '/')
        a = find("index.html", 10);
    else if (sp_dashboard_path(req->path, req->path_len))
        a = find(req->path + PREFIX_LEN, req->path_len - PREFIX_LEN);
    if (!a) {
        sp_http_respond_error(req, 404, "not_found", "no such dashboard file", NULL);
        return;
    }
    sp_http_respond(req, 200, content_type(a->name), PAGE_HEADERS, (const char *)a->data, a->len);
}
