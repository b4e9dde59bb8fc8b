/* Status codes of the native core. 0 is success; failures are negative, as
 * in libuv. Codes that mirror an errno use its negated value. */
#ifndef MNEMO_STATUS_H
#define MNEMO_STATUS_H

#include <errno.h>

#define MNEMO_OK 0
#define MNEMO_EINVAL (-EINVAL)
#define MNEMO_ENOMEM (-ENOMEM)
#define MNEMO_EAGAIN (-EAGAIN)
#define MNEMO_ETIMEDOUT (-ETIMEDOUT)
#define MNEMO_ECANCELED (-ECANCELED)
#define MNEMO_ECIRCUIT_OPEN (-20001)
#define MNEMO_EBULKHEAD_FULL (-20002)
#define MNEMO_ERETRY_EXHAUSTED (-20003)

#endif
