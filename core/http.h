/* HTTP over libcurl: one multi handle per worker and one for the host, so a
 * canceller can wake a transfer at once. */
#ifndef LUAGENT_HTTP_H
#define LUAGENT_HTTP_H

/* Wake a thread blocked in lg_http on this multi handle (any thread). */
void lg_http_wakeup(void *multi);
void lg_http_global_init(void);

#endif
