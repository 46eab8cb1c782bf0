"""GRACE Studio web app (Gradio): ``python app.py``. The tabs live in grace/ui/."""

from grace.ui.app import main

if __name__ == "__main__":
    main()
