#ifndef MNEMO_VERSION_H
#define MNEMO_VERSION_H
#define MNEMO_VERSION "0.1.0"
#endif
