from labsys import create_app

app = create_app()
