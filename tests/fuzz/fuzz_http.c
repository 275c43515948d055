/*
 * fuzz_http.c - libFuzzer driver for the HTTP server's request path (common/http.c): arbitrary
 * bytes run through one connection's parsing, limits, pipelining, streaming and error answers,
 * without a socket (sp_http_fuzz_feed). The first byte of an input chooses how the rest is cut
 * into reads.
 */
#include <stddef.h>
#include <stdint.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sp_http_fuzz_feed(data, size);
    return 0;
}
