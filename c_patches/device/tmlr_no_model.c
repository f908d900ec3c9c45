/* Shim-only firmware: no model on the device (INFER answers TMLR_E_NO_MODEL). */
#include "tmlr_device.h"

const tmlr_model *tmlr_port_model(void);

const tmlr_model *tmlr_port_model(void) { return NULL; }
