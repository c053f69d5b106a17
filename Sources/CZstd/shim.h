#ifndef BCPIPE_CZSTD_SHIM_H
#define BCPIPE_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>
#endif
