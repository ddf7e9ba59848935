"""The conformance kit: the statecharts turned into a test catalogue, client-conformance reports, fault injection,
logbooks and replay.

    report.py     the report model (Autobahn-style: a verdict per case) and its JSON, HTML and JUnit renderers
    logbook.py    a session's frames, states and ending as JSONL, written by `stt serve --conformance DIR`
    checks.py     the client rules of each chart (`client_rules`), evaluated over a logbook
    catalogue.py  a case for every transition and forbidden pair of every chart, with the frames that reach it
    runner.py     runs the catalogue against a server over the wire (`stt conform URL --dialect X`)
    replay.py     sends a logbook's client frames again, with their timing (`stt replay LOGBOOK URL`)
"""
