from catcli.cli import main

raise SystemExit(main())
