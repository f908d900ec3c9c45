/*
 * Host driver for one generated model (repair.intmodel.emit_c): reads int8 inputs of in_size bytes from stdin,
 * one after another, runs tmlr_net_run through the model's invoke hook, writes out_size bytes per input.
 * Lets tests/test_tflm_oracle.py compare the C kernels with TFLite Micro's interpreter on large inputs.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tmlr_device.h"

const tmlr_model *tmlr_port_model(void);

int main(void)
{
    const tmlr_model *m = tmlr_port_model();
    int8_t *in = malloc(m->in_size);
    int8_t *out = malloc(m->out_size);
    if (in == NULL || out == NULL) {
        return 2;
    }
    while (fread(in, 1, m->in_size, stdin) == m->in_size) {
        if (m->invoke(m->ctx, in, out) != 0 || fwrite(out, 1, m->out_size, stdout) != m->out_size) {
            return 1;
        }
    }
    free(in);
    free(out);
    return 0;
}
