"""The work of the requests, around the service (`app.engine.service`): what a request asks and gets back
(`jobs`), its inputs checked (`request_inputs`), the conditional VAEs' requests (`labelled_generation`), latent
maps (`latent_maps`) and what /v1/models says of a model (`model_info`)."""
