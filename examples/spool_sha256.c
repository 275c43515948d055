/*
 * spool_sha256.c - an example lib handler for Spool: hashes a job's payload with SHA-256.
 *
 * The job's payload must be a JSON string; the result is {"sha256": "<64 hex digits>",
 * "bytes": N}, the digest of the string's UTF-8 bytes, the same as `printf %s TEXT | sha256sum`.
 * Any other payload fails the attempt with an error that says why.
 *
 * Self-contained on purpose (no JSON library): a handler library needs nothing from Spool but
 * the function signature. Build: cc -O2 -fPIC -shared -o libspool_example.so spool_sha256.c
 * Handlers file: {"handlers": {"sha256": {"lib": "/path/libspool_example.so",
 *                                         "symbol": "spool_sha256"}}}
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int spool_sha256(const char *job_json, size_t len, char **result, char **error);

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    unsigned char block[64];
    size_t fill;
} sha256_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_t *s, const unsigned char *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(sha256_t *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->bytes = 0;
    s->fill = 0;
}

static void sha256_update(sha256_t *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->bytes += n;
    while (n > 0) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill == 64) {
            sha256_block(s, s->block);
            s->fill = 0;
        }
    }
}

static void sha256_final(sha256_t *s, unsigned char out[32])
{
    uint64_t bits = s->bytes * 8;
    unsigned char pad = 0x80, zero = 0, len[8];
    sha256_update(s, &pad, 1);
    while (s->fill != 56) sha256_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

/* ---- just enough JSON to find the payload ------------------------------------------------ */
/* Spool hands over valid JSON, so these only walk it; they never need to reject anything. */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p at a '"': returns the byte after the closing quote. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return end;
}

static const char *skip_value(const char *p, const char *end)
{
    if (p < end && *p == '"') return skip_string(p, end);
    int depth = 0;
    for (; p < end; p++) {
        if (*p == '"') {
            p = skip_string(p, end) - 1;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0) return p;
            if (--depth == 0) return p + 1;
        } else if (*p == ',' && depth == 0) {
            return p;
        }
    }
    return end;
}

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static size_t put_utf8(unsigned char *o, unsigned cp)
{
    if (cp < 0x80) return o[0] = (unsigned char)cp, 1;
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Feeds the decoded bytes of the JSON string at [p, end) (quotes included) to the hash. */
static void hash_string(sha256_t *s, const char *p, const char *end)
{
    end--; /* the closing quote */
    for (p++; p < end;) {
        const char *run = p;
        while (p < end && *p != '\\') p++;
        sha256_update(s, run, (size_t)(p - run));
        if (p >= end) break;
        unsigned char o[4];
        char c = p[1];
        p += 2;
        switch (c) {
        case 'b':
            o[0] = '\b';
            break;
        case 'f':
            o[0] = '\f';
            break;
        case 'n':
            o[0] = '\n';
            break;
        case 'r':
            o[0] = '\r';
            break;
        case 't':
            o[0] = '\t';
            break;
        case 'u': {
            unsigned cp = hex4(p);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p + 6 <= end && p[0] == '\\' && p[1] == 'u') {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(p + 2) - 0xDC00);
                p += 6;
            }
            sha256_update(s, o, put_utf8(o, cp));
            continue;
        }
        default:
            o[0] = (unsigned char)c;
            break; /* '"', '\\', '/' */
        }
        sha256_update(s, o, 1);
    }
}

static char *dup_text(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* The handler. Called on a worker thread: it keeps no state between calls, so it is
 * thread-safe. The strings it returns are malloc'd; Spool frees them with free(). */
int spool_sha256(const char *job_json, size_t len, char **result, char **error)
{
    const char *p = job_json, *end = job_json + len;
    const char *payload = NULL, *payload_end = NULL;
    p = skip_ws(p, end);
    if (p < end && *p == '{') p++;
    while (p < end && !payload) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"') break;
        const char *key = p;
        p = skip_string(p, end);
        int is_payload = p - key == 9 && memcmp(key, "\"payload\"", 9) == 0;
        p = skip_ws(p, end);
        if (p < end && *p == ':') p++;
        p = skip_ws(p, end);
        const char *v = p;
        p = skip_value(p, end);
        if (is_payload) payload = v, payload_end = p;
        p = skip_ws(p, end);
        if (p < end && *p == ',') p++;
    }
    if (!payload || payload == payload_end || *payload != '"') {
        *error = dup_text("sha256: the payload must be a JSON string: the text to hash");
        return 1;
    }

    sha256_t s;
    unsigned char digest[32];
    sha256_init(&s);
    hash_string(&s, payload, payload_end);
    unsigned long long bytes = (unsigned long long)s.bytes;
    sha256_final(&s, digest);

    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    char *out = malloc(128);
    if (!out) {
        *error = dup_text("sha256: out of memory");
        return 1;
    }
    snprintf(out, 128, "{\"sha256\":\"%s\",\"bytes\":%llu}", hex, bytes);
    *result = out;
    return 0;
}
