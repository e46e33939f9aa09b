-- wrk script: POST one fixed, pre-signed WhatsApp webhook body.
-- BENCH_BODY names the body file, BENCH_SIG holds "sha256=<hex>" for it.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Hub-Signature-256"] = os.getenv("BENCH_SIG")
