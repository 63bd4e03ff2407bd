/* The floor for the model path: post the same Chat Completions request N
 * times with plain libcurl (one easy handle, connection reuse) and print the
 * CPU and wall time per call. Usage: raw_curl URL BODY_FILE N */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static size_t sink(char *p, size_t s, size_t n, void *ud) {
  (void)p;
  *(size_t *)ud += s * n;
  return s * n;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  FILE *f = fopen(argv[2], "rb");
  if (!f) return 2;
  static char body[1 << 20];
  size_t len = fread(body, 1, sizeof body, f);
  fclose(f);
  int n = atoi(argv[3]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL *e = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  size_t got = 0;
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &got);
  double c0 = cpu_s(), w0 = wall_s();
  for (int i = 0; i < n; i++) {
    if (curl_easy_perform(e) != CURLE_OK) return 1;
  }
  double c1 = cpu_s(), w1 = wall_s();
  printf("%.1f %.1f\n", (c1 - c0) / n * 1e6, (w1 - w0) / n * 1e6);
  curl_slist_free_all(h);
  curl_easy_cleanup(e);
  return 0;
}
