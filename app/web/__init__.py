"""The web page: static HTML, CSS and JavaScript served at ``/`` with no build step."""
