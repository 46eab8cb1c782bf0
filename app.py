"""GRACE Studio web app (Gradio). The tabs arrive with the app issue; this serves the core today."""

from grace.ui.app import main

if __name__ == "__main__":
    main()
