"""One module per model, named after its class in lower case (RecBole's convention).

``recbole_diffusion.utils.get_model`` finds a model here by name before looking in RecBole.
"""
