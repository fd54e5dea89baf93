"""``stats`` and ``to-tfrecord`` on distributed engines: Apache Beam (:mod:`.beam`) and
``dask.distributed`` (:mod:`.dask`), one module per engine, over what they share
(:mod:`.common`: list, batch, fold, publish). Above ``checks/`` and ``records/``, below
``cli/``."""
