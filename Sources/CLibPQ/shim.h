#ifndef BCPIPE_CLIBPQ_SHIM_H
#define BCPIPE_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
