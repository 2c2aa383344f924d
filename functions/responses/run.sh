#!/bin/sh
# Handler: run.sh. LWA's /opt/bootstrap (AWS_LAMBDA_EXEC_WRAPPER) starts this instead of the Python runtime; it serves
# app.lambda_handler on 127.0.0.1:$AWS_LWA_PORT (darkroom.api.lwa). sys.path as the python3.12 runtime sets it:
# the function's code, then the layers (https://docs.aws.amazon.com/lambda/latest/dg/python-layers.html).
export PYTHONPATH="${LAMBDA_TASK_ROOT}:/opt/python/lib/python3.12/site-packages:/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m darkroom.api.lwa app.lambda_handler
