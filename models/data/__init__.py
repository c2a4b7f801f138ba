"""Data: MNIST (`mnist`), the photograph sets (`natural_images`), a folder of your own images
(`image_folder`) and the corruptions models learn to undo (`corruptions`)."""
