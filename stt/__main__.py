from stt.cli import main

raise SystemExit(main())
