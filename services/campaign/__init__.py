"""The Campaign service (herald.campaign.v1.CampaignService)."""
