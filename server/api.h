/*
 * api.h - the HTTP API v1 (docs/API.md): routes a request to a validated call on the backend
 * and writes the JSON answer. No queue logic lives here; no HTTP framing either.
 */
#ifndef SP_API_H
#define SP_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "http.h"

typedef struct sp_api sp_api_t;

typedef struct {
    sp_backend_t *backend; /* not owned */
    const char *token;     /* bearer token (copied); NULL: no authentication */
    size_t token_len;
} sp_api_opts_t;

/* Returns NULL on allocation failure. */
sp_api_t *sp_api_new(const sp_api_opts_t *opts);
void sp_api_free(sp_api_t *api);

/* The HTTP handler (sp_http_handler_fn); ud is the sp_api_t. */
void sp_api_handle(void *ud, sp_http_req_t *req);

/* While draining, every request but /healthz is answered 503 with Retry-After. */
void sp_api_set_draining(sp_api_t *api, bool draining);

#endif
