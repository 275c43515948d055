/*
 * api_monitor.h - what the API layer shares with the monitoring modules: the queue object of
 * GET /v1/queues (the event stream sends the same objects) and the wiring of /metrics and
 * /v1/events into the API's routes.
 */
#ifndef SP_API_MONITOR_H
#define SP_API_MONITOR_H

#include "api.h"
#include "buf.h"
#include "events.h"
#include "job.h"
#include "metrics.h"

/* Writes one queue as GET /v1/queues shows it: {name, paused, counts, oldest_queued_age_ms,
 * totals}. */
void sp_api_write_queue(sp_buf_t *b, const sp_queue_stats_t *q);

/* Gives the API what /metrics and /v1/events answer from (neither owned; NULL, the default,
 * answers those routes 503). */
void sp_api_set_monitor(sp_api_t *api, sp_events_t *events, sp_metrics_t *metrics);

#endif
