"""The screens: one module per screen, each reading the app's Clinic."""
