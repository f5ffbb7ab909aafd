from redtrain.cli import main

raise SystemExit(main())
