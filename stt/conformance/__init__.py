"""The conformance kit: the statecharts turned into a test catalogue, client-conformance reports, logbooks and
replay (fault injection, which the session carries out, is stt.faults). docs/conformance.md.

    report.py     the report model (Autobahn-style: a verdict per case) and its JSON, text, HTML, JUnit renderers
    svg.py        a chart drawn as an inline SVG, the path a session took highlighted (for the HTML report)
    logbook.py    reads a session's logbook (its frames, states and ending as JSONL), which stt.recording writes
                  for `stt serve --conformance DIR`
    checks.py     the client rules of each chart (`client_rules`), evaluated over a logbook; the server's test
                  modes with a client report after each recorded session (`modes_with_reports`, stt.testmodes)
    profiles.py   per dialect, what a well-behaved client sends for each client event and how each server event looks
    catalogue.py  a case for every transition and forbidden pair of every chart, with the path that reaches it
    runner.py     runs the catalogue against a server over the wire (`stt conform URL --dialect X`)
    replay.py     sends a logbook's client frames again, with their timing (`stt replay LOGBOOK URL`)
"""
