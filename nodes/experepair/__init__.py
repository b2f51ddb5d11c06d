"""ExpeRepair: program repair with episodic demonstrations and semantic insights (``experepair.*``)."""
