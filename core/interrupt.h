/* SIGINT for command-line hosts (interrupt.c). */
#ifndef LUAGENT_INTERRUPT_H
#define LUAGENT_INTERRUPT_H

#include "dispatcher.h"

#include <stddef.h>

/* Install the SIGINT handler (once per process) and make `a` the app it
 * wakes. 0 ok, -1 with a message. */
int lg_interrupt_catch(lg_app *a, char *err, size_t errlen);
/* SIGINTs received since the handler was installed. */
int lg_interrupts(void);

#endif
