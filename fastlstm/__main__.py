from fastlstm.cli import main

raise SystemExit(main())
