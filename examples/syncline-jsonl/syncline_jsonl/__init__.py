"""An example syncline plugin: a JSON-lines backend and a newest-wins conflict resolver."""
