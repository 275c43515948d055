/*
 * dashboard.h - the dashboard page of GET /: one HTML page with its script, style and the
 * vendored chart library (uPlot), embedded into the binary so that it works with no internet
 * access. The sources live in server/dashboard/; the build turns them into a C table
 * (build/gen/dashboard_assets.c, made by server/dashboard/embed.sh).
 *
 * The page holds no data: it reads everything from the API with the token the user gives it,
 * so its files are served without authentication.
 */
#ifndef SP_DASHBOARD_H
#define SP_DASHBOARD_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

/* One embedded file: its path under server/dashboard/ ("index.html", "vendor/uPlot.min.css"). */
typedef struct {
    const char *name;
    const unsigned char *data;
    size_t len;
} sp_dashboard_asset_t;

/* The generated table. */
extern const sp_dashboard_asset_t sp_dashboard_assets[];
extern const size_t sp_dashboard_asset_count;

/* True for the dashboard's paths: "/" and "/dashboard/..." (the path part of a target, not
 * decoded). */
bool sp_dashboard_path(const char *path, size_t len);

/* Answers a GET or HEAD of a dashboard path: "/" is the page, "/dashboard/NAME" the embedded
 * file NAME; anything else is 404. */
void sp_dashboard_serve(sp_http_req_t *req);

#endif
