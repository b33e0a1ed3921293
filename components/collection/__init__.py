"""The `collect` stage: scripted experts in PlayTable write CALVIN, BridgeData v2 and LLaVA folders."""
