"""Shared PDF pieces for every PDF the archive writes (export transcripts, reports).

API for report writers (issue 10):

- ``render.render_pdf(template, context, *, attachment=None, attachment_name="data.json",
  title=..., templates_dir=None) -> bytes``: renders ``templates/<template>`` (Jinja,
  autoescape on) to HTML and then to PDF/A-3b with WeasyPrint; ``attachment`` (any
  JSON-serialisable value) is embedded as an associated file ``attachment_name``
  (``application/json``, AFRelationship ``Data``). Metadata dates are fixed from
  ``context["generated_at"]`` when given, so the same input gives the same bytes.
- ``render.render_html(template, context, templates_dir=None) -> str``: the HTML only.
- ``sign.load_signer(home, env=os.environ, *, now=None) -> Signer``: the identity from
  ``ARCHIVER_REPORT_SIGNER`` (PEM with key + chain, or PKCS#12 with the password in
  ``ARCHIVER_REPORT_SIGNER_PASSWORD_FILE``); without it, ``<home>/report-signer.pem`` is
  generated self-signed (mode 0600) on first use. Raises ``SignerError`` (an
  ``ArchiverError``) for an expired / not-yet-valid certificate or a key that does not
  match it. Call it BEFORE rendering so a bad signer is refused first.
- ``sign.sign_pdf(pdf: bytes, signer, *, tsa_url=None, reason=..., field="Signature1")
  -> bytes``: PAdES B-B (B-T with an RFC 3161 timestamp when ``tsa_url`` is given,
  default ``ARCHIVER_TSA_URL``), covering the whole document.
"""
