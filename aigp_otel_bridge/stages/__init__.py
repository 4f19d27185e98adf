"""The pipeline, one module per stage, each importing only the stages before it.

``extract`` reads a finished span's note (or a full AIGP event) into governance records and facts;
``correlate`` gathers them into runs keyed by trace and local root; ``aggregate`` sums a closed
run's records into a summary; ``build`` names the run and makes its OpenLineage RunEvent;
``deliver`` hands the event to the OpenLineage client, retrying or storing it in the outbox.
"""
