#ifndef BCPIPE_CZLIB_SHIM_H
#define BCPIPE_CZLIB_SHIM_H
#include <zlib.h>
#endif
