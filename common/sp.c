/* sp.c - error texts, state names, the clock and name validation (see sp.h). */
#include "sp.h"

#include <string.h>
#include <time.h>

const char *sp_strerror(int err)
{
    switch (err) {
    case SP_OK:
        return "ok";
    case SP_ENOMEM:
        return "out of memory";
    case SP_EINVAL:
        return "invalid input";
    case SP_ENOTFOUND:
        return "not found";
    case SP_ECONFLICT:
        return "conflict";
    case SP_EFULL:
        return "queue full";
    case SP_EUNAVAIL:
        return "unavailable";
    case SP_ETOOBIG:
        return "too large";
    case SP_EIO:
        return "i/o error";
    }
    return "unknown error";
}

static const char *const state_names[SP_STATE_COUNT] = {
    "scheduled", "queued", "running", "succeeded", "failed", "canceled",
};

const char *sp_state_name(sp_state_t s)
{
    if ((unsigned)s < SP_STATE_COUNT) return state_names[s];
    return "unknown";
}

int sp_state_parse(const char *name, size_t len, sp_state_t *out)
{
    for (int i = 0; i < SP_STATE_COUNT; i++) {
        if (strlen(state_names[i]) == len && memcmp(state_names[i], name, len) == 0) {
            *out = (sp_state_t)i;
            return 0;
        }
    }
    return SP_EINVAL;
}

int64_t sp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool sp_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > SP_NAME_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}
