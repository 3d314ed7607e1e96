"""Media -> features: manifest readers, decode/face/audio/subtitle stages, encoder actors, the Ray Data job."""
