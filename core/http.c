/* HTTP over libcurl (R-6, R-23, §8). */
#include "http.h"
#include "internal.h"
#include "worker.h"

#include <curl/curl.h>
#include <pthread.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

/* curl_global_init once per process; never curl_global_cleanup (other
 * threads or the host may still use libcurl). */
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void lg_http_global_init(void) { pthread_once(&curl_once, curl_init_once); }

void lg_http_wakeup(void *multi) {
  if (multi) curl_multi_wakeup((CURLM *)multi);
}

void lg_http_worker_cleanup(lg_worker *w) {
  if (w->multi) curl_multi_cleanup((CURLM *)w->multi);
  w->multi = NULL;
}
