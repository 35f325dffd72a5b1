"""The faces of QSEF-KD: the HTTP service and the ``qsef`` command line.

They parse, validate, call the library (``router``, ``experts``, ``qsef``) and format; no routing
logic lives here. The HTTP app (:func:`api.main.create_app`) is small files: ``main.py`` builds the
app and its lifespan (which builds the router once), ``routes/`` has one ``APIRouter`` per resource,
``deps.py`` the ``Annotated`` dependencies, ``schemas.py`` the ``XCreate``/``XPublic`` bodies,
``errors.py`` the mapping of domain exceptions to 4xx, ``middleware.py`` request IDs, body limits,
access logs and metrics.

Example:
    $ qsef serve                                   # http://127.0.0.1:8000/docs
    $ curl -s localhost:8000/v1/route -d '{"query": "What is a tort, and how do I sort a list in Python?"}' \\
           -H 'content-type: application/json'
    >>> from openai import OpenAI
    >>> OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").chat.completions.create(
    ...     model="qsef-router", messages=[{"role": "user", "content": "What is a tort?"}])
"""
