"""What more than one test module uses: fakes and runners. Tests import from
here, never from each other (nor from a conftest)."""
