"""Names vulture cannot see used: read by a framework, a template or a serializer. `make lint` passes this
file to vulture beside the code; each line says who uses the name."""

# ruff: noqa
_.released  # BatchReport: the batch task's log line and the tests read it
_.wants  # ListChoice.wants: templates/web/preferences.html
_.intercepted_binops  # jinja2's SandboxedEnvironment reads it
_.isolation_level  # SQLAlchemy's pysqlite connection attribute, set in db.py
_.one_click_sessions  # app.state, read through the request by web/deps.py
_.tracking_sessions  # app.state, read through the request by web/deps.py
_.unique_clicks  # response fields FastAPI serialises
_.confirmation_emails_queued
_.unsubscribes
_.complaints
_.duration_seconds
_.send_rate_per_second
_.host_name  # aiosmtpd's handler attribute (tests/smtpserver.py)
_.should_exit  # uvicorn.Server's stop flag, set by the browser test
_.background  # Starlette runs a Response's background task after sending it
_.do_GET  # http.server calls it (tests/snsserver.py)
_.log_message  # http.server calls it (tests/snsserver.py)
