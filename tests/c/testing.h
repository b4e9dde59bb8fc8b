/* Shared includes for the C unit tests (cmocka). */
#ifndef MNEMO_TESTING_H
#define MNEMO_TESTING_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#endif
