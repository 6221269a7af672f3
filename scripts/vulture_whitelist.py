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
_.frozen  # DigestOut: a response field FastAPI serialises
_.host_name  # aiosmtpd's handler attribute (tests/smtpserver.py)
_.should_exit  # uvicorn.Server's stop flag, set by the browser test
_.background  # Starlette runs a Response's background task after sending it
_.pytest_plugins  # pytest reads it in tests/conftest.py
_.admin_probe  # a FastAPI route of tests/test_admin_auth.py, called through the app
_.problem_list  # DigestForm: templates/admin/digests/_problems.html


# Hypothesis runs the @initialize / @rule / @invariant methods of tests/test_counters.py's LedgerMachine
_.plan_a_campaign
_.claim_some
_.record_some
_.crash_and_sweep
_.make_retries_due
_.resend_failures
_.pause_or_resume
_.unsubscribe_someone
_.erase_someone
_.counters_equal_a_scan


_.do_GET  # http.server calls it (tests/snsserver.py)
_.log_message  # http.server calls it (tests/snsserver.py)

# Response fields FastAPI serialises (web/api/schemas.py: Deactivated, AuditPage)
_.deactivated
_.sessions_ended
_.next_before
_._host  # smtplib.SMTP reads it as STARTTLS's server_hostname (newsletter/health.py)
_.nameservers  # dnspython's Resolver reads it (tests/test_admin_settings.py)
_.delivery_status  # bounces.Received: templates/admin/bounces.html
# SQLAlchemy session event listeners (newsletter/outbox.py)
_._notify
_._forget
_._pool  # httpx's transport: its httpcore pool, given our checked network backend (newsletter/webhooks/destinations.py)
_.do_POST  # http.server calls it (tests/webhookreceiver.py)
_.webhook_id  # a response field of the webhooks API (pydantic)
# Celery signal receivers (worker/observability.py), connected by decorator
_._configure_logging  # Celery signal receiver
_._serve_metrics  # Celery signal receiver
_._forget_process  # Celery signal receiver
# Hypothesis runs the @initialize / @rule methods of tests/test_event_counters.py's EventMachine
_.send_a_campaign
_.open_it
_.click_a_link
_.bounce_it
_.complain
_.an_event_some_hours_ago
_.EventFirst  # the table the events trigger writes (migration 0014); mapped for the schema and its tests
_.soft_bounces  # CampaignReport (API schema) field, filled from stats.campaign_report's dict
_.soft_bounce_suppressed  # likewise
_.counted_by  # growth_days column written by growth.py's SQL and read by the triggers of migration 0015
_.xid  # growth_changes column written by the triggers of migration 0015
