#!/bin/bash
# The handler of the streaming function: the Lambda Web Adapter layer (AWS_LAMBDA_EXEC_WRAPPER=
# /opt/bootstrap) runs this script at cold start, waits until GET $AWS_LWA_READINESS_CHECK_PATH
# answers, then forwards each Function URL request to http://127.0.0.1:$AWS_LWA_PORT and streams the
# response back (AWS_LWA_INVOKE_MODE=response_stream). The core package and uvicorn come from the
# CoreLayer (/opt/python); app.py sits next to this script.
HERE="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$HERE:/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" --lifespan on --no-access-log app:app
