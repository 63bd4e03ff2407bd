/* The floor for the model path: post the same Chat Completions requests N
 * times with plain libcurl (one easy handle, connection reuse) and print the
 * CPU and wall time per round (one round = each body posted once, in order).
 * Usage: raw_curl URL BODY_FILE N [BODY_FILE...] */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_BODIES 8

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

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  static char chunk[1 << 16];
  char *out = NULL;
  size_t n = 0, got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    char *p = realloc(out, n + got + 1);
    if (!p) break;
    out = p;
    for (size_t i = 0; i < got; i++) out[n + i] = chunk[i];
    n += got;
  }
  fclose(f);
  *len = n;
  return out;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  char *body[MAX_BODIES];
  size_t len[MAX_BODIES];
  int nb = 0;
  for (int i = 2; i < argc && nb < MAX_BODIES; i++) {
    if (i == 3) continue; /* N */
    body[nb] = slurp(argv[i], &len[nb]);
    if (!body[nb]) return 2;
    nb++;
  }
  int n = atoi(argv[3]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL *e = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  size_t got = 0;
  curl_easy_setopt(e, CURLOPT_URL, argv[1]);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &got);
  double c0 = cpu_s(), w0 = wall_s();
  for (int i = 0; i < n; i++) {
    for (int b = 0; b < nb; b++) {
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, body[b]);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len[b]);
      if (curl_easy_perform(e) != CURLE_OK) return 1;
    }
  }
  double c1 = cpu_s(), w1 = wall_s();
  printf("%.1f %.1f\n", (c1 - c0) / n * 1e6, (w1 - w0) / n * 1e6);
  curl_slist_free_all(h);
  curl_easy_cleanup(e);
  for (int b = 0; b < nb; b++) free(body[b]);
  return 0;
}
